"""The CPU thread count is chosen from the work and is part of the stage keys (issue 20, item 6).

The tiny models run on one thread unless --threads says otherwise; on a CPU the count changes
the bytes of the output (measured: two of four tiny images differ between one and two threads),
so a run with another count never reuses units computed with this one.
"""

from __future__ import annotations

import json

import pytest
import torch

from gitd.cli import main
from gitd.config import make_config
from gitd.data.shapes import make_shapes
from gitd.methods import distill
from gitd.models.roles import Runtime
from gitd.threads import ENV, is_tiny, threads_for


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_tiny_models_run_on_one_thread(restore_threads, monkeypatch):
    assert is_tiny("tiny") and is_tiny("tiny-sd") and is_tiny("tiny-llava")
    assert not is_tiny("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert not is_tiny("random-sd15") and not is_tiny(None)
    torch.set_num_threads(2)
    assert threads_for(["tiny-sd", "tiny-clip", None]) == 1
    monkeypatch.setenv(ENV, "3")
    assert threads_for(["tiny-sd"]) == 3
    monkeypatch.setenv(ENV, "none")
    with pytest.raises(Exception, match="GITD_THREADS"):
        threads_for(["tiny-sd"])


def test_runtime_records_more_than_one_cpu_thread_in_the_key(restore_threads, monkeypatch):
    one = Runtime.resolve("cpu", "float32", ["tiny-sd"])
    assert (one.threads, one.device_type) == (1, "cpu") and torch.get_num_threads() == 1
    monkeypatch.setenv(ENV, "2")
    two = Runtime.resolve("cpu", "float32", ["tiny-sd"])
    assert (two.threads, two.device_type) == (2, "cpu-2-threads")
    assert torch.get_num_threads() == 2


def test_another_thread_count_does_not_reuse_cached_units(tmp_path, restore_threads,
                                                          monkeypatch):
    shapes = make_shapes(tmp_path / "data", train=12, test=1, size=64, seed=3,
                         workers=1)["train_json"]
    cfg = make_config("tiny", pairs=2, seed=0, device="cpu")
    out = distill(shapes, tmp_path / "out", cfg, work=tmp_path / "work")
    one = json.loads((out / "manifest.json").read_text())["stages"]
    monkeypatch.setenv(ENV, "2")
    distill(shapes, tmp_path / "out", cfg, work=tmp_path / "work")
    two = json.loads((out / "manifest.json").read_text())["stages"]
    assert set(one) == set(two)
    # Every stage that computes with a model got a new key; the model-free ones (the data
    # record) kept theirs.
    assert [s for s in one if one[s] == two[s]] == [s for s in one if s == "data"]


def test_threads_flag_reaches_torch(restore_threads, tmp_path, capsys):
    assert main(["select", str(tmp_path / "missing.json"), "--method", "random", "--pairs",
                 "1", "--out", str(tmp_path / "o"), "--threads", "2"]) == 2
    assert torch.get_num_threads() == 2
