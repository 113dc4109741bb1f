"""benchmarks/gpu_check.py: one line without a GPU; its smoke mode runs every item's code path
on the CPU and writes the JSON a GPU run writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
ITEMS = ["distill-gitd", "distill-pds", "distill-edge", "finetune-step", "encode-32",
         "encode-64", "clara"]


def run(*args, cwd):
    # The script runs from another folder: the sources under test must come first.
    import gitd

    src = str(Path(gitd.__file__).resolve().parents[1])
    path = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=900)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine")
def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    proc = run(cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.strip().splitlines() == [proc.stdout.strip()]
    assert "no CUDA GPU" in proc.stdout and "--device cpu --smoke" in proc.stdout
    assert not (tmp_path / "gpu_check.json").exists()


def test_smoke_runs_every_item_and_writes_the_json(tmp_path):
    out = tmp_path / "check.json"
    proc = run("--device", "cpu", "--smoke", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["device"] == "cpu"
    assert report["peak_flops"] > 0 and report["peak_flops_source"].startswith("measured")
    items = {item["name"]: item for item in report["items"]}
    assert list(items) == ITEMS
    for name, item in items.items():
        assert item["error"] is None, (name, item["error"])
        assert item["seconds"] > 0 and item["peak_memory_mib"] is not None, name
        assert item["flops"] > 0 and item["floor_seconds"] > 0 and item["ratio"] > 0, name
    # The generation stages as the methods' plans name them.
    for method, stage in (("gitd", "img2img"), ("pds", "unclip"), ("edge", "text2img")):
        detail = items[f"distill-{method}"]["detail"]
        assert detail["ratio_stage"] == stage and detail["stages"][stage] > 0
        assert detail["flops_by_stage"][stage] == items[f"distill-{method}"]["flops"]
    assert items["finetune-step"]["detail"]["steps"] == 1
    assert sum(items["finetune-step"]["detail"]["micro_batches"]) == \
        items["finetune-step"]["detail"]["batch_size"]
    assert items["encode-64"]["detail"]["images_per_s"] > 0
    assert items["clara"]["detail"]["rows"] == 1500
    # The table printed is the JSON's.
    assert "| distill-gitd |" in proc.stdout and f"wrote {out}" in proc.stdout


def test_the_presets_it_runs_are_in_the_registry():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert gpu_check.missing_presets(gpu_check.FULL) == []
    assert gpu_check.missing_presets(gpu_check.SMOKE) == []
    other = gpu_check.Sizes(**{**gpu_check.SMOKE.__dict__, "preset": "nonesuch"})
    assert gpu_check.missing_presets(other) == [f"distill:{m}/nonesuch"
                                                for m in ("gitd", "pds", "edge")]
