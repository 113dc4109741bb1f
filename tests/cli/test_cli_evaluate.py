import json
import os

import pytest
from PIL import Image

from gitd.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_text_folder(tmp_path_factory):
    from gitd.evaluation.tiny import write_tiny_text_model
    return str(write_tiny_text_model(tmp_path_factory.mktemp("cli-tiny-text")))


def _set(folder, colours, file):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, c in enumerate(colours):
        Image.new("RGB", (24, 24), c).save(folder / "images" / f"{file}{i}.png")
        rows.append({"image": f"images/{file}{i}.png", "caption": [f"colour {c[0]} {c[1]}"]})
    (folder / f"{file}.json").write_text(json.dumps(rows))
    return str(folder / f"{file}.json")


def test_cli_evaluate_prints_table_and_writes_results(tmp_path, tiny_text_folder, capsys):
    cols = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250)]
    train = _set(tmp_path, cols, "train")
    test = _set(tmp_path, cols[::-1], "test")
    out = tmp_path / "r.json"
    rc = main(["evaluate", "--train", train, "--test", test, "--epochs", "1", "--seeds", "2",
               "--image-model", "timm:resnet10t", "--no-pretrained", "--text-model",
               tiny_text_folder, "--image-size", "32", "--batch-size", "4", "--cache",
               str(tmp_path / "c"), "--out", str(out), "--report-best-on-test", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for k in ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "r_mean", "±",
              "best epoch ON TEST (optimistic, for comparison with papers only)"):
        assert k in captured.out
    r = json.loads(out.read_text())
    assert len(r["seeds"]) == 2 and r["seeds"][0]["epochs"][0]["epoch"] == 1
    assert r["summary"]["r_mean"]["std"] >= 0


@pytest.mark.parametrize("extra,needle", [
    (["--train", "/nonexistent/train.json"], "/nonexistent/train.json"),
    (["--seeds", "0"], "--seeds: must be an integer in [1, 1000], got '0'"),
    (["--epochs", "-1"], "--epochs: must be an integer in [0, 100000], got '-1'"),
    (["--image-model", "timm:no_such_net"], "no_such_net"),
    (["--device", "tpu:9"], "device"),
])
def test_cli_evaluate_user_errors_are_one_line(tmp_path, tiny_text_folder, capsys, extra, needle):
    train = _set(tmp_path, [(250, 0, 0), (0, 0, 250)], "train")
    args = ["evaluate", "--train", train, "--test", train, "--text-model", tiny_text_folder,
            "--no-pretrained", "--image-model", "timm:resnet10t", "--cache", str(tmp_path / "c")]
    rc = main(args + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("gitd evaluate: error: ") and needle in err[-1]
    assert not any("Traceback" in line for line in err)
