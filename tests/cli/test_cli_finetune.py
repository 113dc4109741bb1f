"""`gitd finetune`: the tiny preset end to end, flags from the settings, one-line errors."""

from __future__ import annotations

import json

import pytest

from gitd.cli import main
from gitd.data.shapes import make_shapes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-ft")
    make_shapes(root, train=8, test=2, size=64, seed=1, workers=1)
    return root / "train.json"


def test_tiny_run_writes_a_resumable_run(data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["finetune", str(data), "--out", str(run), "--preset", "tiny", "--epochs", "1",
                 "--device", "cpu", "--gradient-accumulation-steps", "2", "-q"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(run)
    for name in ("trained.safetensors", "settings.json", "curves.jsonl", "run.json",
                 "checkpoint.safetensors"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "run.json").read_text())
    # 8 images x 5 captions = 40 pairs, batch 8: 5 steps.
    assert summary["steps"] == 5 and summary["data"]["pairs"] == 40
    assert summary["settings"]["gradient_accumulation_steps"] == 2
    assert summary["base"]["model"] == "tiny-sd"
    assert len((run / "curves.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "1"], "batch_size must be >= 2"),
    (["--lr", "0"], "lr must be"),
    (["--mixed-precision", "fp16", "--device", "cpu"], "fp16 needs CUDA"),
])
def test_bad_settings_are_one_line_errors(data, tmp_path, capsys, flags, message):
    code = main(["finetune", str(data), "--out", str(tmp_path / "r"), "--preset", "tiny",
                 *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1


def test_help_lists_every_setting(capsys):
    assert main(["finetune", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--diversity-weight", "--denoise-weight", "--gradient-checkpointing",
                 "--mixed-precision", "--num-processes", "--checkpoint-every"):
        assert flag in out


@pytest.mark.parametrize("extra", [[], ["--gradient-checkpointing"],
                                   ["--no-gradient-checkpointing", "--strict"]])
def test_relaunch_command_line_parses_back_to_the_same_settings(extra):
    """`gitd finetune` on several GPUs runs itself again under accelerate with these
    arguments: they must parse to what the user gave."""
    from gitd.cli import build_parser
    from gitd.cli.finetune import command_line

    argv = ["finetune", "d.json", "--out", "r", "--preset", "tiny", "--lr", "0.5",
            "--batch-size", "16", "--num-processes", "2", "-q", *extra]
    first = vars(build_parser().parse_args(argv))
    again = vars(build_parser().parse_args(command_line(first)))
    drop = ("_run",)
    assert {k: v for k, v in again.items() if k not in drop} == \
        {k: v for k, v in first.items() if k not in drop}
