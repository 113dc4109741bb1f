"""The README's EDGE commands with the tiny preset, offline: finetune, distill --method edge,
then check, evaluate and report on the output."""

from __future__ import annotations

import json

import pytest

from gitd.cli import main
from gitd.data.shapes import make_shapes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-edge")
    make_shapes(root, train=12, test=6, size=64, seed=2, workers=1)
    return root


@pytest.mark.slow
def test_finetune_then_distill_edge_then_check_evaluate_report(data, tmp_path, capsys):
    from gitd.evaluation.tiny import write_tiny_text_model

    train, test = str(data / "train.json"), str(data / "test.json")
    run, out = tmp_path / "run", tmp_path / "out"
    assert main(["finetune", train, "--out", str(run), "--preset", "tiny", "--epochs", "1",
                 "--device", "cpu", "-q"]) == 0
    assert main(["distill", train, "--method", "edge", "--preset", "tiny", "--finetuned",
                 str(run), "--pairs", "4", "--out", str(out), "--device", "cpu", "-q"]) == 0
    assert main(["check", str(out)]) == 0
    capsys.readouterr()
    text = write_tiny_text_model(tmp_path / "text")
    assert main(["evaluate", "--train", str(out), "--test", test, "--epochs", "1", "--seeds",
                 "1", "--image-model", "timm:resnet10t", "--no-pretrained", "--text-model",
                 str(text), "--image-size", "32", "--batch-size", "4", "--cache",
                 str(tmp_path / "cache"), "--out", str(out / "results.json"), "-q"]) == 0
    results = json.loads((out / "results.json").read_text())
    # Two captions per image (the prompt and one synthesised): 8 training captions.
    assert results["sets"]["train"]["images"] == 4
    assert results["sets"]["train"]["captions"] == 8
    assert main(["report", str(out), "-q"]) == 0
    assert (out / "report.html").is_file()
