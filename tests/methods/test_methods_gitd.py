"""The GITD method end to end on the stand-in dataset with the tiny preset (CPU, offline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitd.config import make_config
from gitd.data import load_dataset
from gitd.data.check import check_dataset
from gitd.errors import GitdError
from gitd.methods import distill

PAIRS = 6


def tiny(**overrides):
    overrides.setdefault("pairs", PAIRS)
    overrides.setdefault("seed", 0)
    overrides.setdefault("device", "cpu")
    return make_config("tiny", **overrides)


def output_files(out: Path) -> dict[str, bytes]:
    """What must be identical between an interrupted-and-resumed run and an uninterrupted one."""
    files = {p.relative_to(out).as_posix(): p.read_bytes()
             for p in sorted((out / "images").iterdir())}
    for name in ("annotations.json", "metadata.jsonl"):
        files[name] = (out / name).read_bytes()
    return files


@pytest.fixture(scope="module")
def reference(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    distill(shapes, out, tiny())
    return out


def test_output_format_and_manifest(reference, shapes, field_loaders):
    anns = json.loads((reference / "annotations.json").read_text())
    assert len(anns) == PAIRS
    assert all(isinstance(a["caption"], str) and a["caption"].strip() for a in anns)
    assert [a["image_id"] for a in anns] == list(range(PAIRS))
    assert len(field_loaders.check_output(reference)) == PAIRS
    assert len(list((reference / "images").glob("*.png"))) == PAIRS
    meta = [json.loads(line) for line in (reference / "metadata.jsonl").read_text().splitlines()]
    assert [m["file_name"] for m in meta] == [a["image"] for a in anns]
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["method"] == "gitd" and manifest["preset"] == "tiny"
    assert manifest["untrained"] is True
    assert manifest["pairs"] == PAIRS and len(manifest["items"]) == PAIRS
    assert manifest["source"]["n_valid"] == 40
    assert len(manifest["source"]["fingerprint"]) >= 8
    ids = {r.id for r in load_dataset(shapes)}
    for item in manifest["items"]:
        assert item["source_id"] in ids
        assert item["cluster_size"] >= 1
        assert len(item["scores"]["image_prompt_scores"]) == manifest["config"]["num_candidates"]
        assert len(item["scores"]["caption_candidates"]) == manifest["config"]["num_captions"]
    assert sum(i["cluster_size"] for i in manifest["items"]) == 40
    assert manifest["clustering"]["method"] == "clara"
    for stage in ("encode", "cluster", "img2img", "caption"):
        assert stage in manifest["timings"]
    assert "torch" in manifest["versions"]
    # The output is itself a clean dataset.
    report = check_dataset(reference / "annotations.json")
    assert report.exit_code == 0, report.format_text()


def test_same_seed_same_output_and_cached_rerun(reference, shapes, tmp_path, caplog):
    out = tmp_path / "again"
    distill(shapes, out, tiny())
    assert output_files(out) == output_files(reference)
    # A second run over the same work folder recomputes nothing.
    caplog.set_level("INFO", logger="gitd")
    distill(shapes, out, tiny())
    text = caplog.text
    assert "encode: cached" in text and "cluster: cached" in text
    assert f"{PAIRS} of {PAIRS} medoids already done" in text


def test_changed_setting_recomputes_only_what_depends_on_it(reference, shapes, tmp_path, caplog):
    out = tmp_path / "changed"
    distill(shapes, out, tiny())
    caplog.set_level("INFO", logger="gitd")
    distill(shapes, out, tiny(num_captions=3))
    text = caplog.text
    assert "encode: cached" in text and "cluster: cached" in text
    assert "already done" in text  # generation reused
    assert "caption: settings changed" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(len(i["scores"]["caption_candidates"]) == 3 for i in manifest["items"])


def test_a_bumped_stage_version_recomputes_that_stage_and_those_after_it(
        reference, shapes, tmp_path, caplog, monkeypatch):
    # A gitd release that fixes CLARA bumps ClusterSettings.version: a user's cached latents
    # are kept, the medoids and everything made from them are computed again.
    from gitd.stages.cluster import ClusterSettings

    out = tmp_path / "bumped"
    distill(shapes, out, tiny())
    first = json.loads((out / "manifest.json").read_text())
    monkeypatch.setattr(ClusterSettings, "version", ClusterSettings.version + 1)
    caplog.set_level("INFO", logger="gitd")
    distill(shapes, out, tiny())
    text = caplog.text
    assert "encode: cached" in text
    assert "cluster: settings changed (version)" in text
    assert "img2img: settings changed (upstream)" in text and "already done" not in text
    second = json.loads((out / "manifest.json").read_text())
    changed = {k for k in first["stages"] if first["stages"][k] != second["stages"][k]}
    assert changed == {"cluster", "img2img", "caption"}
    assert second["plan"]["cluster"]["version"] == first["plan"]["cluster"]["version"] + 1
    assert output_files(out) == output_files(reference)  # same code: the same result


class Crash(Exception):
    pass


@pytest.mark.parametrize("stage,after", [("img2img", 2), ("caption", 3)])
def test_crash_and_resume_gives_identical_output(reference, shapes, tmp_path, caplog, stage, after):
    out = tmp_path / "crashed"

    def crash(name, j):
        if name == stage and j == after:
            raise Crash()

    with pytest.raises(Crash):
        distill(shapes, out, tiny(), on_unit=crash)
    assert not (out / "annotations.json").exists()
    caplog.set_level("INFO", logger="gitd")
    distill(shapes, out, tiny())
    assert output_files(out) == output_files(reference)
    if stage == "img2img":
        assert "img2img: 3 of 6 medoids already done" in caplog.text
    else:
        assert "caption: 4 of 6 images already done" in caplog.text


def test_sigkill_during_generation_then_resume(reference, shapes, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "gitd", "distill", str(shapes), "--pairs", str(PAIRS),
           "--preset", "tiny", "--out", str(out), "--seed", "0", "--device", "cpu",
           "--generate-batch-size", "1", "--num-inference-steps", "40"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and proc.poll() is None:
        done = list(out.glob("work/img2img-*/0*.json"))
        if len(done) >= 2:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert killed, "the run finished before it could be killed; make generation slower"
    assert not (out / "annotations.json").exists()
    # 40 steps instead of the preset's count: the resumed run must use the same setting.
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "medoids already done, not redone" in res.stderr
    ref = tmp_path / "ref40"
    distill(shapes, ref, tiny(generate_batch_size=1, num_inference_steps=40))
    assert output_files(out) == output_files(ref)


@pytest.mark.parametrize("flag,field,check", [
    ("cluster", "cluster", lambda m: m["clustering"]["method"] == "random"),
    ("diffusion", "diffusion", lambda m: all(i["image"].endswith(".png") and
                                              not i["scores"].get("image_prompt_scores")
                                              for i in m["items"])),
    ("captioner", "captioner_on", lambda m: all(i["caption"] == i["source_caption"]
                                                for i in m["items"])),
    ("score", "score", lambda m: all(i["scores"]["chosen_candidate"] == 0 for i in m["items"])),
])
def test_each_ablation_changes_what_the_manifest_says(shapes, tmp_path, flag, field, check):
    out = tmp_path / flag
    distill(shapes, out, tiny(**{field: False}))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ablations"][flag] is False
    assert sum(v is False for v in manifest["ablations"].values()) == 1
    assert check(manifest)
    assert len(json.loads((out / "annotations.json").read_text())) == PAIRS


def test_no_diffusion_copies_the_medoid_images(shapes, tmp_path):
    out = tmp_path / "nodiff"
    distill(shapes, out, tiny(diffusion=False, captioner_on=False))
    manifest = json.loads((out / "manifest.json").read_text())
    for item in manifest["items"]:
        assert (out / item["image"]).read_bytes() == Path(item["source_image"]).read_bytes()


def test_broken_rows_are_skipped_and_listed(shapes, tmp_path):
    rows = json.loads(shapes.read_text())
    rows.append({"image": "images/does_not_exist.png", "caption": ["a ghost"]})
    rows.append({"image": rows[0]["image"].replace("train", "tr_ain"), "caption": [""]})
    (shapes.parent / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rows.append({"image": "images/corrupt.png", "caption": ["a corrupt file"]})
    broken = shapes.parent / "broken.json"
    broken.write_text(json.dumps(rows))
    out = tmp_path / "broken"
    distill(broken, out, tiny())
    manifest = json.loads((out / "manifest.json").read_text())
    problems = " | ".join(s["problem"] for s in manifest["skipped"])
    assert len(manifest["skipped"]) >= 3, problems
    assert any("corrupt" in str(s) for s in manifest["skipped"])
    assert len(json.loads((out / "annotations.json").read_text())) == PAIRS
    with pytest.raises(GitdError):
        distill(broken, tmp_path / "strict", tiny(), strict=True)


def test_too_many_pairs_and_bad_k_are_one_line_errors(shapes, tmp_path):
    with pytest.raises(GitdError, match="asked for 41 pairs but .* only 40"):
        distill(shapes, tmp_path / "a", tiny(pairs=41))
    with pytest.raises(GitdError, match="pairs"):
        distill(shapes, tmp_path / "b", tiny(pairs=0))


def test_cli_distill_end_to_end(shapes, tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "gitd", "distill", str(shapes), "--pairs", "4",
                          "--preset", "tiny", "--out", str(out), "--quiet"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(json.loads((out / "annotations.json").read_text())) == 4
    assert str(out) in res.stdout
    bad = subprocess.run([sys.executable, "-m", "gitd", "distill", str(shapes), "--pairs", "999",
                          "--preset", "tiny", "--out", str(tmp_path / "x")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert "999" in bad.stderr.strip().splitlines()[-1]


def test_full_disk_is_one_line_and_keeps_finished_work(reference, shapes, tmp_path, monkeypatch):
    import errno

    import gitd.store

    out = tmp_path / "full"
    real_fsync = gitd.store.os.fsync
    state = {"units": 0}

    def count(stage, j):
        state["units"] += 1

    def fsync(fd):
        if state["units"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(gitd.store.os, "fsync", fsync)
    with pytest.raises(GitdError) as err:
        distill(shapes, out, tiny(), on_unit=count)
    message = str(err.value)
    assert "No space left on device" in message and "\n" not in message
    assert "re-run" in message
    monkeypatch.setattr(gitd.store.os, "fsync", real_fsync)
    # The two medoids finished before the disk filled up are kept, and the re-run completes.
    assert len(list(out.glob("work/img2img-*/0*.json"))) == 2
    assert not list(out.glob("work/**/.*.tmp"))
    distill(shapes, out, tiny())
    assert output_files(out) == output_files(reference)


def test_config_file_then_flags_and_saved_config(shapes, tmp_path):
    from gitd.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("preset: tiny\nnum_candidates: 3\nnum_captions: 3\nseed: 5\n")
    out = tmp_path / "cfg-out"
    assert main(["distill", str(shapes), "--pairs", "2", "--out", str(out), "--config", str(cfg),
                 "--num-captions", "1", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["seed"] == 5
    assert manifest["config"]["num_candidates"] == 3      # from the file
    assert manifest["config"]["num_captions"] == 1        # the flag beats the file
    # The saved config reproduces the run.
    again = tmp_path / "again"
    assert main(["distill", str(shapes), "--pairs", "2", "--out", str(again), "--config",
                 str(out / "config.json"), "--quiet"]) == 0
    assert output_files(again) == output_files(out)
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_candidate: 3\n")
    assert main(["distill", str(shapes), "--pairs", "2", "--out", str(tmp_path / "b"),
                 "--config", str(bad)]) == 2


def test_manifest_says_untrained_for_full_size_random_models(shapes, tmp_path):
    # The CLARA selection with SD 1.5's full-size random-weight VAE (at 64 px, cheap): the
    # manifest must flag the output as untrained whatever the model's name.
    out = tmp_path / "clara"
    distill(shapes, out, make_config(
        "random-fast", pairs=2, seed=0, device="cpu", resolution=64, diffusion=False,
        captioner_on=False))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["vae"]["name"] == "random-sd15"
    assert manifest["untrained"] is True
    # the same selection with no model at all is not flagged
    out = tmp_path / "none"
    distill(shapes, out, tiny(pairs=2, cluster=False, diffusion=False, captioner_on=False))
    assert json.loads((out / "manifest.json").read_text())["untrained"] is False


def test_changed_revisions_recompute_the_stages_that_use_the_model(shapes, tmp_path):
    # Regression: the caption key left out captioner_revision, and the img2img (then named
    # generate) and caption keys left out score_revision, so a changed revision reused the old
    # captions.
    from gitd.cli import main

    out = tmp_path / "rev"
    base = ["distill", str(shapes), "--pairs", "2", "--preset", "tiny", "--out", str(out),
            "--device", "cpu", "--quiet"]

    def stages(*flags):
        assert main([*base, *flags]) == 0
        return json.loads((out / "manifest.json").read_text())["stages"]

    first = stages()
    caption = stages("--captioner-revision", "v2")
    assert {k for k in first if first[k] != caption[k]} == {"caption"}
    score = stages("--captioner-revision", "v2", "--score-revision", "v2")
    assert {k for k in caption if caption[k] != score[k]} == {"img2img", "caption"}
    # Each changed stage was computed anew in its own folder; the old ones are untouched.
    for key in (first["caption"], caption["caption"], score["caption"]):
        assert len(list((out / "work" / f"caption-{key}").glob("0*.json"))) == 2
    assert len(list((out / "work").glob("img2img-*"))) == 2
    assert len(list((out / "work").glob("encode-*"))) == 1
