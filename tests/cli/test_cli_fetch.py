"""`gitd fetch` against a local server speaking the hub's API: it downloads exactly the files
the loaders read and nothing else; `--dry-run` needs no network; after it, the run works with
HF_HUB_OFFLINE=1 (the login-node / compute-node flow); a run missing models says so once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch

from gitd.data.shapes import make_shapes


def gitd(env, *args, timeout=600):
    """A separate process (the compute node of the cluster flow)."""
    return subprocess.run([sys.executable, "-m", "gitd", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def cli(capsys, *args):
    """The command in this process (starting a process costs seconds on a loaded machine):
    (exit status, stdout, stderr)."""
    from gitd.cli import main

    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_repos(tmp_path_factory):
    """The tiny preset's models saved as hub repositories, with files no loader reads beside
    them: SD 1.5's layout (fp16 variants, a single-file checkpoint, .bin weights, a safety
    checker), a CLIP and a BLIP with .bin copies of their weights and a README."""
    from transformers import CLIPProcessor

    from gitd.models import tiny

    root = tmp_path_factory.mktemp("repos")
    sd = root / "sd"
    pipe = tiny.build_tiny_img2img(device="cpu", dtype=torch.float32, seed=0)
    pipe.save_pretrained(sd)
    pipe.to(torch.float16).save_pretrained(sd, variant="fp16")
    (sd / "v1-5-pruned.safetensors").write_bytes(b"x" * 4096)
    (sd / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"y" * 4096)
    (sd / "safety_checker").mkdir()
    (sd / "safety_checker" / "model.safetensors").write_bytes(b"z" * 4096)
    (sd / "safety_checker" / "config.json").write_text("{}")
    clip = root / "clip"
    score = tiny.build_tiny_score_model(device="cpu", dtype=torch.float32)
    score.model.save_pretrained(clip)
    CLIPProcessor(image_processor=score.image_processor,
                  tokenizer=score.tokenizer).save_pretrained(clip)
    blip = root / "blip"
    cap = tiny.build_tiny_captioner(device="cpu", dtype=torch.float32)
    cap.model.save_pretrained(blip)
    cap.processor.save_pretrained(blip)
    for folder in (clip, blip):
        (folder / "pytorch_model.bin").write_bytes(b"w" * 4096)
        (folder / "README.md").write_text("# tiny")
        (folder / "flax_model.msgpack").write_bytes(b"v" * 4096)
    return {"org/tiny-sd": sd, "org/tiny-clip": clip, "org/tiny-blip": blip}


def _is_unread(path: str) -> bool:
    return (path.endswith((".bin", ".msgpack", "README.md")) or "v1-5-pruned" in path
            or "/safety_checker/" in path)


def test_fetch_downloads_exactly_the_listed_files_then_runs_offline(local_hub, tiny_repos,
                                                                    tmp_path, capsys):
    for repo, folder in tiny_repos.items():
        local_hub.add_commit(repo, folder)
    models = ["--model", "img2img=org/tiny-sd", "--model", "score=org/tiny-clip",
              "--model", "captioner=org/tiny-blip"]
    rc, stdout, err = cli(capsys, "fetch", *models, "--dtype", "float32")
    assert rc == 0, err
    listed = {}
    repo = None
    for line in stdout.splitlines():
        if not line.startswith(" ") and " @ " in line:
            repo = line.split(" @ ")[0]
        elif line.startswith("    ") and not line.strip().startswith("note:"):
            listed.setdefault(repo, set()).add(line.split()[0])
    got = {}
    for path in local_hub.downloads():
        org, name, rest = path.split("/", 2)
        got.setdefault(f"{org}/{name}", set()).add(rest)
    assert got == listed, (got, listed)
    assert not any(_is_unread(f"/{p}") for files in got.values() for p in files), got
    assert "unet/diffusion_pytorch_model.safetensors" in got["org/tiny-sd"]
    assert not any(".fp16." in p for p in got["org/tiny-sd"])  # --dtype float32
    assert "3 repositories" in stdout.splitlines()[-1]
    # Everything in the cache is what was listed: nothing else arrived.
    for repo_id, files in listed.items():
        snaps = list((local_hub.cache / ("models--" + repo_id.replace("/", "--"))
                      / "snapshots").iterdir())
        assert len(snaps) == 1
        on_disk = {p.relative_to(snaps[0]).as_posix() for p in snaps[0].rglob("*")
                   if p.is_file()}
        assert on_disk == files

    # The compute node: offline, the same models, a whole run.
    make_shapes(tmp_path / "data", train=6, test=1, size=32, seed=0, workers=1)
    offline = {**local_hub.env, "HF_HUB_OFFLINE": "1",
               "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    out = tmp_path / "out"
    res = gitd(offline, "distill", tmp_path / "data" / "train.json", "--pairs", 2, "--preset",
               "tiny", "--diffusion-model", "org/tiny-sd", "--score-model", "org/tiny-clip",
               "--captioner", "org/tiny-blip", "--out", out, "--device", "cpu", "-q")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["img2img"]["name"] == "org/tiny-sd"
    assert len(json.loads((out / "annotations.json").read_text())) >= 2

    # fp16 (what a CUDA run loads): only the fp16 variant files are new.
    local_hub.requests.clear()
    rc, _, err = cli(capsys, "fetch", "--model", "img2img=org/tiny-sd")
    assert rc == 0, err
    new = {p.removeprefix("org/tiny-sd/") for p in local_hub.downloads()}
    assert new and all(".fp16." in p for p in new), new


def test_dry_run_needs_no_network(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    rc, text, err = cli(capsys, "fetch", "--dry-run", "--preset", "paper")
    assert rc == 0, err
    for repo in ("stable-diffusion-v1-5/stable-diffusion-v1-5", "openai/clip-vit-base-patch32",
                 "Salesforce/blip2-opt-6.7b-coco"):
        assert repo in text
    assert "revision main" in text and "model_index.json" in text
    assert "unet" in text and "*.fp16.safetensors" in text and "safety_checker" not in text
    _, text, _ = cli(capsys, "fetch", "--dry-run", "--method", "pds", "--preset", "paper")
    assert "sd2-community/stable-diffusion-2-1-unclip-small" in text
    assert "stabilityai" not in text
    _, text, _ = cli(capsys, "fetch", "--dry-run", "--finetune", "--caption", "--evaluate")
    for repo in ("llava-hf/llava-1.5-7b-hf", "timm/nfnet_l0", "google-bert/bert-base-uncased",
                 "openai/clip-vit-base-patch32"):
        assert repo in text, text
    # Without --dry-run, offline: one line saying why.
    rc, _, err = cli(capsys, "fetch", "--preset", "paper")
    assert rc == 3 and "HF_HUB_OFFLINE is set" in err and len(err.strip().splitlines()) == 1


def test_every_missing_model_in_one_message_before_any_work(tmp_path, monkeypatch, capsys):
    make_shapes(tmp_path / "data", train=4, test=1, size=32, seed=0, workers=1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "distill", tmp_path / "data" / "train.json", "--pairs", 2,
                     "--method", "pds", "--preset", "paper", "--recaption", "--captioner",
                     "org/my-captioner", "--out", out)
    lines = [ln for ln in err.strip().splitlines() if "error" in ln]
    assert rc == 3 and len(lines) == 1, err
    line = lines[0]
    assert "3 model(s) of this run cannot be loaded" in line
    for repo in ("openai/clip-vit-large-patch14",
                 "sd2-community/stable-diffusion-2-1-unclip-small", "org/my-captioner"):
        assert repo in line
    # The preset's models by preset, the one changed by flag by name.
    assert "'gitd fetch --method pds --preset paper --model captioner=org/my-captioner'" in line
    assert not out.exists()
    rc, _, err = cli(capsys, "finetune", tmp_path / "data" / "train.json", "--out",
                     tmp_path / "run", "--device", "cpu")
    assert rc == 3 and "2 model(s)" in err and "gitd fetch --finetune paper'" in err
    assert not (tmp_path / "run").exists()
