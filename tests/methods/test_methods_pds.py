"""`gitd distill --method pds` end to end with the tiny preset (CPU, offline)."""

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
from gitd.data.check import check_dataset
from gitd.methods import distill

PAIRS = 8


def pds(**overrides):
    overrides.setdefault("pairs", PAIRS)
    return make_config("tiny", method="pds", seed=0, device="cpu", **overrides)


def output_files(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((out / "images").iterdir())}
    files["annotations.json"] = (out / "annotations.json").read_bytes()
    return files


@pytest.fixture(scope="module")
def reference(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    distill(shapes, out, pds())
    return out


def test_writes_clean_pairs_and_manifest(reference, field_loaders):
    anns = json.loads((reference / "annotations.json").read_text())
    assert len(anns) == PAIRS
    assert len(field_loaders.check_output(reference)) == PAIRS
    assert check_dataset(reference / "annotations.json").exit_code == 0
    m = json.loads((reference / "manifest.json").read_text())
    assert m["method"] == "pds" and m["untrained"] is True
    assert m["filtering"]["pairs_dropped"] == 40  # floor(0.2 * 200 pairs)
    assert m["models"]["unclip"]["name"] == "tiny-unclip"
    for item in m["items"]:
        assert item["prototype"]["members"] >= 1 and item["caption"] == item["source_caption"]
        assert item["prototype"]["match_count"] <= item["prototype"]["members"]
    assert len({i["source_id"] for i in m["items"]}) == PAIRS
    assert set(m["timings"]) >= {"embed", "prototypes", "unclip"}


def test_crash_and_resume_gives_identical_output(reference, shapes, tmp_path, caplog):
    out = tmp_path / "crash"

    class Crash(Exception):
        pass

    def crash(stage, j):
        if stage == "unclip" and j == 5:
            raise Crash()

    with pytest.raises(Crash):
        distill(shapes, out, pds(), on_unit=crash)
    caplog.set_level("INFO", logger="gitd")
    distill(shapes, out, pds())
    assert "embed: cached" in caplog.text and "prototypes: cached" in caplog.text
    assert "unclip: 6 of 8 prototypes already done" in caplog.text
    assert output_files(out) == output_files(reference)


def test_sigkill_then_resume(reference, shapes, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "gitd", "distill", str(shapes), "--method", "pds", "--pairs",
           str(PAIRS), "--preset", "tiny", "--out", str(out), "--seed", "0", "--device", "cpu",
           "--generate-batch-size", "1", "--num-inference-steps", "30"]
    proc = subprocess.Popen(cmd, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, killed = time.time() + 120, False
    while time.time() < deadline and proc.poll() is None:
        if len(list(out.glob("work/unclip-*/0*.json"))) >= 2:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert killed, "the run finished before it could be killed"
    res = subprocess.run(cmd, env=os.environ, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "prototypes already done, not redone" in res.stderr
    ref = tmp_path / "ref30"
    distill(shapes, ref, pds(generate_batch_size=1, num_inference_steps=30))
    assert output_files(out) == output_files(ref)


def test_generator_free_variant_copies_the_nearest_real_images(reference, shapes, tmp_path):
    out = tmp_path / "nodiff"
    distill(shapes, out, pds(diffusion=False))
    m = json.loads((out / "manifest.json").read_text())
    for item in m["items"]:
        assert (out / item["image"]).read_bytes() == Path(item["source_image"]).read_bytes()
    ref = json.loads((reference / "manifest.json").read_text())
    assert [i["source_id"] for i in m["items"]] == [i["source_id"] for i in ref["items"]]
    assert m["models"]["unclip"]["used"] is False


def test_recaption_uses_the_captioner(shapes, tmp_path):
    out = tmp_path / "recap"
    distill(shapes, out, pds(pairs=3, recaption=True))
    m = json.loads((out / "manifest.json").read_text())
    assert m["models"]["captioner"]["name"] == "tiny-blip"
    assert all(len(i["scores"]["caption_candidates"]) == 2 for i in m["items"])


def test_bad_setting_is_one_clear_line(shapes, tmp_path):
    env = {**os.environ}
    res = subprocess.run([sys.executable, "-m", "gitd", "distill", str(shapes), "--method", "pds",
                          "--pairs", "2", "--preset", "tiny", "--out", str(tmp_path / "x"),
                          "--unclip-model", "tiny-unclip", "--score-model", "tiny-clip",
                          "--filter-fraction", "1.5"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "filter_fraction" in res.stderr.strip().splitlines()[-1]
