"""A GPU out-of-memory error anywhere is one line naming the flags that fix it."""

from __future__ import annotations

import pytest
import torch

from gitd.cli import main


def raiser(exc):
    def run(*args, **kwargs):
        raise exc
    return run


@pytest.mark.parametrize("argv, target, flags", [
    (["distill", "data.json", "--pairs", "2", "--out", "OUT", "--preset", "tiny"],
     "gitd.methods.distill", ("--offload", "--generate-batch-size", "--caption-batch-size")),
    (["finetune", "data.json", "--out", "RUN", "--preset", "tiny"],
     "gitd.stages.finetune.finetune", ("--micro-batch", "--gradient-checkpointing")),
    (["caption", "OUT", "--extra", "1", "--preset", "tiny"],
     "gitd.stages.caption_synthesis.caption_output", ("--offload", "--vlm-batch-size")),
    (["benchmark", "data.json", "--test", "test.json", "--out", "BENCH"],
     "gitd.benchmark.run.run_benchmark", ("--batch-size", "--image-size", "--config")),
])
def test_cuda_out_of_memory_is_one_line_with_the_fixing_flags(argv, target, flags, monkeypatch,
                                                             capsys):
    monkeypatch.setattr(target, raiser(torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 15.7 GiB "
        "of which 1.2 GiB is free.")))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"gitd {argv[0]}: error: the GPU ran out of memory")
    for flag in flags:
        assert flag in err
    assert "finished work is kept" in err


def test_an_mps_out_of_memory_runtime_error_too(monkeypatch, capsys):
    monkeypatch.setattr("gitd.methods.distill", raiser(RuntimeError(
        "MPS backend out of memory (MPS allocated: 17.00 GB)")))
    assert main(["distill", "d.json", "--pairs", "2", "--out", "O", "--preset", "tiny"]) == 2
    assert "--offload" in capsys.readouterr().err


def test_another_runtime_error_is_still_a_bug_with_its_traceback(monkeypatch):
    monkeypatch.setattr("gitd.methods.distill", raiser(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["distill", "d.json", "--pairs", "2", "--out", "O", "--preset", "tiny"])


@pytest.mark.parametrize("command", ["distill", "finetune", "caption", "evaluate", "select",
                                     "benchmark"])
def test_every_flag_the_line_names_exists(command, capsys):
    import re

    from gitd.cli.oom import FIXES

    assert main([command, "--help"]) == 0
    help_text = capsys.readouterr().out
    for flag in re.findall(r"--[a-z][a-z-]+", FIXES[command]):
        assert flag in help_text, (command, flag)



def test_the_benchmarks_config_file_can_set_offload(tmp_path):
    # What the benchmark's line advises: its --config file (read as gitd distill --config reads
    # it, for every distillation of the benchmark) sets offload.
    import json

    from gitd.config import make_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"offload": "model", "generate_batch_size": 1}))
    for method in ("gitd", "pds", "edge"):
        s = make_config("tiny", config_file=path, method=method)
        assert (s.offload, s.generate_batch_size) == ("model", 1)
