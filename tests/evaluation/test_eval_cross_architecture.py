"""Several encoders in one run (issue 21, item 2): one row per (image, text) pair, and their
mean."""

import json

import numpy as np
import pytest

from gitd.cli import main
from gitd.errors import ConfigError
from gitd.evaluation.evaluate import evaluate, format_table
from gitd.retrieval.metrics import METRIC_NAMES

TINY = dict(pretrained=False, image_size=32, batch_size=4, lr=1e-3, workers=0, epochs=1,
            seeds=2)


def test_two_image_encoders_give_two_rows_and_their_mean(tiny_sets, tiny_text, tmp_path):
    train, test = tiny_sets
    out = tmp_path / "r.json"
    r = evaluate(train, test, image_model="timm:resnet10t, timm:resnet14t",
                 text_model=tiny_text, cache=tmp_path / "c", out=out, **TINY)
    rows = r["architectures"]
    assert [(x["image_model"], x["text_model"]) for x in rows] == [
        ("timm:resnet10t", tiny_text), ("timm:resnet14t", tiny_text)]
    # each row is the single-encoder evaluation (same cache key, same figures)
    alone = evaluate(train, test, image_model="timm:resnet14t", text_model=tiny_text,
                     cache=tmp_path / "c", **TINY)
    assert alone["from_cache"] and alone["summary"] == rows[1]["summary"]
    # the mean row: per seed the mean over the two rows, then mean and sample std over seeds
    for k in METRIC_NAMES:
        per_seed = [np.mean([row["seeds"][i]["reported"][k] for row in rows]) for i in range(2)]
        assert r["summary"][k]["mean"] == pytest.approx(np.mean(per_seed))
        assert r["summary"][k]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert r["encoders"]["image"]["models"] == ["timm:resnet10t", "timm:resnet14t"]
    assert "mean over 2" in r["cross_architecture"]
    table = format_table(r).splitlines()
    assert sum(line.startswith(("resnet10t +", "resnet14t +", "mean ")) for line in table) == 3
    saved = json.loads(out.read_text())
    assert saved["summary"] == r["summary"] and len(saved["architectures"]) == 2
    # run again: both rows come from the results file / cache
    again = evaluate(train, test, image_model="timm:resnet10t,timm:resnet14t",
                     text_model=tiny_text, cache=tmp_path / "c", out=out, **TINY)
    assert again["from_cache"] and again["summary"] == r["summary"]


def test_cli_lists_on_both_sides_make_every_pair(tiny_sets, tiny_text, tmp_path, capsys):
    train, test = tiny_sets
    rc = main(["evaluate", "--train", str(train), "--test", str(test), "--image-model",
               "timm:resnet10t,timm:resnet14t", "--text-model", f"{tiny_text},{tiny_text}@mean",
               "--no-pretrained", "--image-size", "32", "--batch-size", "4", "--epochs", "1",
               "--seeds", "1", "--cache", str(tmp_path / "c"), "--workers", "0", "-q",
               "--out", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    r = json.loads((tmp_path / "r.json").read_text())
    assert len(r["architectures"]) == 4
    assert len({x["cache_key"] for x in r["architectures"]}) == 4
    assert "mean" in capsys.readouterr().out


def test_a_bad_encoder_list_is_one_line_before_anything_trains(tiny_sets, tiny_text):
    train, test = tiny_sets
    with pytest.raises(ConfigError, match="names an encoder twice"):
        evaluate(train, test, image_model="timm:resnet10t,timm:resnet10t", text_model=tiny_text,
                 **TINY)
    with pytest.raises(ConfigError, match="empty name"):
        evaluate(train, test, image_model="timm:resnet10t,", text_model=tiny_text, **TINY)
