"""EDGE end to end with the tiny preset: gitd finetune, then distill --method edge (CPU, offline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gitd.config import make_config
from gitd.data import load_dataset
from gitd.data.check import check_dataset
from gitd.errors import ConfigError
from gitd.methods import distill
from gitd.stages.finetune import FinetuneSettings, finetune

PAIRS = 4
SRC = str(Path(__file__).resolve().parents[2] / "src")


def edge(**overrides):
    overrides.setdefault("pairs", PAIRS)
    overrides.setdefault("device", "cpu")
    return make_config("tiny", method="edge", **overrides)


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory) -> Path:
    s = FinetuneSettings.from_preset("tiny", device="cpu", epochs=1, batch_size=20)
    return finetune(shapes, tmp_path_factory.mktemp("edge-run") / "run", s)


@pytest.fixture(scope="module")
def reference(shapes, run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edge-ref")
    distill(shapes, out, edge(finetuned=str(run)))
    return out


def test_output_is_clean_with_the_prompt_first(reference, shapes, run, field_loaders):
    report = check_dataset(reference)
    assert report.exit_code == 0, report.format_text()
    # The field's training loaders: one item per caption (prompt + 1 synthesised), per image.
    assert len(field_loaders.check_output(reference)) == 2 * PAIRS
    records = load_dataset(reference).records
    assert len(records) == PAIRS and all(len(r.captions) == 2 for r in records)
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["method"] == "edge" and manifest["untrained"] is True
    assert manifest["prompts"]["strategy"] == "random"
    assert manifest["finetuned"]["base"] == {"model": "tiny-sd", "revision": None, "seed": 0}
    assert manifest["finetuned"]["tensors"] > 0
    assert set(manifest["stages"]) == {"random-prompts", "text2img", "caption_synthesis"}
    # Each image's first caption is its prompt, a training caption.
    captions = {c for r in load_dataset(shapes) for c in r.captions}
    for item, rec in zip(manifest["items"], records):
        assert rec.captions[0] == item["source_caption"] and rec.captions[0] in captions
    assert manifest["caption_synthesis"]["original_captions"] == [[r.captions[0]]
                                                                  for r in records]


def test_no_finetuned_run_samples_the_base_model(reference, shapes, tmp_path):
    base = distill(shapes, tmp_path / "base", edge())
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["finetuned"] is None
    ref = json.loads((reference / "manifest.json").read_text())
    # Same prompts (same seed), other weights: other images.
    assert [i["source_caption"] for i in manifest["items"]] == \
        [i["source_caption"] for i in ref["items"]]
    assert (base / "images/0000.png").read_bytes() != (reference / "images/0000.png").read_bytes()
    assert manifest["stages"]["random-prompts"] == ref["stages"]["random-prompts"]
    assert manifest["stages"]["text2img"] != ref["stages"]["text2img"]


@pytest.mark.slow
def test_sigkill_while_sampling_then_resume_gives_identical_bytes(shapes, run, tmp_path,
                                                                  output_files):
    out = tmp_path / "killed"
    script = (
        "import os, signal\n"
        "from gitd.config import make_config\n"
        "from gitd.methods import distill\n"
        f"s = make_config('tiny', method='edge', pairs={PAIRS}, device='cpu', "
        f"generate_batch_size=1, finetuned={str(run)!r})\n"
        "def hook(stage, j):\n"
        "    if stage == 'text2img' and j == 1:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"distill({str(shapes)!r}, {str(out)!r}, s, on_unit=hook)\n")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "annotations.json").exists()
    assert len(list(out.glob("work/text2img-*/0*.json"))) == 2
    res = subprocess.run([sys.executable, "-m", "gitd", "distill", str(shapes), "--method",
                          "edge", "--preset", "tiny", "--pairs", str(PAIRS), "--device", "cpu",
                          "--generate-batch-size", "1", "--finetuned", str(run),
                          "--out", str(out)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2 of 4 pairs already done, not redone" in res.stderr
    ref = distill(shapes, tmp_path / "ref", edge(generate_batch_size=1, finetuned=str(run)))
    assert output_files(out) == output_files(ref)


def test_clara_prompts_are_gitds_medoid_captions(shapes, tmp_path):
    out = distill(shapes, tmp_path / "edge", edge(prompts="clara", extra_captions=0))
    gitd = distill(shapes, tmp_path / "gitd", make_config(
        "tiny", method="gitd", pairs=PAIRS, device="cpu", diffusion=False, captioner_on=False))
    ours = json.loads((out / "manifest.json").read_text())["items"]
    theirs = json.loads((gitd / "manifest.json").read_text())["items"]
    assert [i["source_id"] for i in ours] == [i["source_id"] for i in theirs]
    assert [i["source_caption"] for i in ours] == [i["source_caption"] for i in theirs]


def test_prototype_prompts_are_pds_prototype_captions(shapes, tmp_path):
    out = distill(shapes, tmp_path / "edge", edge(prompts="prototype", extra_captions=0))
    pds = distill(shapes, tmp_path / "pds", make_config(
        "tiny", method="pds", pairs=PAIRS, device="cpu", diffusion=False))
    ours = json.loads((out / "manifest.json").read_text())["items"]
    theirs = json.loads((pds / "manifest.json").read_text())["items"]
    assert [i["source_caption"] for i in ours] == [i["source_caption"] for i in theirs]


def test_a_run_of_another_base_is_refused(shapes, run, tmp_path):
    with pytest.raises(ConfigError, match="trained from 'tiny-sd'"):
        distill(shapes, tmp_path / "o", edge(finetuned=str(run), diffusion_model="random-sd15"))
    with pytest.raises(ConfigError, match="--seed 0"):
        distill(shapes, tmp_path / "o", edge(finetuned=str(run), seed=3))


def test_extra_captions_on_another_method(shapes, tmp_path):
    out = distill(shapes, tmp_path / "gitd", make_config(
        "tiny", method="gitd", pairs=2, device="cpu", diffusion=False, extra_captions=2))
    records = load_dataset(out).records
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(len(r.captions) == 3 for r in records)
    assert [r.captions[0] for r in records] == [i["caption"] for i in manifest["items"]]
    assert manifest["models"]["vlm"]["name"] == "tiny-llava"
    assert manifest["models"]["vlm"]["used"] is True


def test_the_trained_weights_are_read_once_per_run(shapes, run, reference, tmp_path,
                                                   monkeypatch, output_files):
    import gitd.stages.finetune.state as state
    import gitd.store

    reads = []
    real = state.read_trained_run
    monkeypatch.setattr(state, "read_trained_run", lambda path: reads.append(path) or real(path))
    monkeypatch.setattr(state, "read_trained", lambda *a: pytest.fail("read_trained called"))
    monkeypatch.setattr(gitd.store, "file_fingerprint",
                        lambda *a, **k: pytest.fail("file_fingerprint called"))
    out = distill(shapes, tmp_path / "once", edge(finetuned=str(run)))
    assert reads == [str(run)]  # check, key, sampler and manifest share the one read
    assert output_files(out) == output_files(reference)
