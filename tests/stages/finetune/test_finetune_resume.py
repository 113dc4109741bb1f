"""A fine-tuning run SIGKILL-ed between checkpoints resumes from the last one and ends with the
same weights as an uninterrupted run; two data-parallel processes give the weights of one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gitd.stages.finetune import FinetuneSettings, finetune, read_trained

SRC = str(Path(__file__).resolve().parents[3] / "src")


def _env():
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _tensors(run):
    return read_trained(run)[0]


def test_sigkill_between_checkpoints_resumes_to_the_same_weights(ft_data, tmp_path):
    # 16 pairs, batch 8: 2 steps per epoch, 3 epochs; checkpoints at steps 2, 4, 6.
    kw = dict(device="cpu", epochs=3, checkpoint_every=2)
    run = tmp_path / "killed"
    script = (
        "import os, signal, torch\n"
        "torch.set_num_threads(1)\n"
        "from gitd.stages.finetune import FinetuneSettings, finetune\n"
        f"s = FinetuneSettings.from_preset('tiny', **{kw!r})\n"
        "def hook(step):\n"
        "    if step == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"finetune({str(ft_data)!r}, {str(run)!r}, s, on_step=hook)\n")
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (run / "trained.safetensors").exists()
    steps = [json.loads(x)["step"] for x in (run / "curves.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # step 3 ran after the last checkpoint (step 2)

    s = FinetuneSettings.from_preset("tiny", **kw)
    finetune(ft_data, run, s)
    whole = finetune(ft_data, tmp_path / "whole", s)
    a, b = _tensors(run), _tensors(whole)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (run / "curves.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    ref = [json.loads(x) for x in (whole / "curves.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref]


@pytest.mark.slow
def test_two_processes_give_the_weights_of_one(ft_data, tmp_path):
    """`gitd finetune --num-processes 2 --device cpu` relaunches itself through accelerate
    (two gloo processes, 4 pairs each); the result matches one process with the same global
    batch of 8 up to float rounding."""
    run2 = tmp_path / "two"
    cmd = [sys.executable, "-m", "gitd", "finetune", str(ft_data), "--out", str(run2),
           "--preset", "tiny", "--device", "cpu", "--num-processes", "2", "-q"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run2 / "run.json").read_text())
    assert summary["processes"] == 2
    one = finetune(ft_data, tmp_path / "one", FinetuneSettings.from_preset("tiny", device="cpu"))
    a, b = _tensors(run2), _tensors(one)
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k
