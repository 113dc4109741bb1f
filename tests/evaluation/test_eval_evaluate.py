import json

import numpy as np
import pytest

from gitd.errors import ConfigError, DataError
from gitd.evaluation.evaluate import (BEST_ON_TEST_LABEL, eval_epochs, evaluate, format_table,
                                      summarize)
from gitd.retrieval.metrics import METRIC_NAMES

TINY = dict(image_model="timm:resnet10t", pretrained=False, image_size=32, batch_size=4,
            lr=1e-3, workers=0)


def test_eval_epochs():
    assert eval_epochs(0) == [0]
    assert eval_epochs(2) == [1, 2]
    assert eval_epochs(400) == [80, 160, 240, 320, 400]
    assert eval_epochs(7, 3) == [3, 6, 7]


def test_summary_uses_sample_std():
    s = summarize([{k: 1.0 for k in METRIC_NAMES}, {k: 3.0 for k in METRIC_NAMES}])
    assert s["TR@1"] == {"mean": 2.0, "std": pytest.approx(np.sqrt(2.0))}
    assert summarize([{k: 5.0 for k in METRIC_NAMES}])["IR@10"] == {"mean": 5.0, "std": 0.0}


def test_evaluate_reports_last_epoch_mean_and_std(tiny_sets, tiny_text, tmp_path):
    train, test = tiny_sets
    out = tmp_path / "r.json"
    r = evaluate(train, test, epochs=2, seeds=2, text_model=tiny_text, cache=tmp_path / "c",
                 out=out, **TINY)
    saved = json.loads(out.read_text())
    assert saved["summary"] == r["summary"]
    assert set(r["summary"]) == set(METRIC_NAMES)
    assert r["selection"] == "last epoch" and "best_on_test" not in r
    assert [s["seed"] for s in r["seeds"]] == [0, 1]
    for s in r["seeds"]:
        assert [h["epoch"] for h in s["epochs"]] == [1, 2]
        assert s["reported_epoch"] == 2 and s["reported"] == s["epochs"][-1]["test"]
        assert len(s["train_loss"]) == 2
    vals = [s["reported"]["r_mean"] for s in r["seeds"]]
    assert r["summary"]["r_mean"]["mean"] == pytest.approx(np.mean(vals))
    assert r["summary"]["r_mean"]["std"] == pytest.approx(np.std(vals, ddof=1))
    assert r["encoders"]["image"]["name"] == "timm:resnet10t"
    assert r["encoders"]["text"]["requested"] == tiny_text
    assert r["config"]["protocol"]["image_size"] == 32 and r["protocol"] == "gitd"
    assert r["sets"]["test"]["images"] == 6 and r["sets"]["test"]["captions"] == 12
    assert r["train_fingerprint"] and r["n_train"] == 8
    assert not (tmp_path / "r.json.partial").exists()
    table = format_table(r)
    assert "TR@1" in table and "±" in table and "2 seed(s)" in table


def test_validation_picks_the_epoch_and_best_on_test_is_labelled(tiny_sets, tiny_text, tmp_path,
                                                                  monkeypatch):
    import gitd.retrieval.train as T
    train, test = tiny_sets
    # Scripted scores: val peaks at epoch 2, test peaks at epoch 3.
    script = {("val", 1): 10, ("val", 2): 30, ("val", 3): 20,
              ("test", 1): 1, ("test", 2): 2, ("test", 3): 50}

    def fake_evaluate(self, pairs, **kw):
        which = "val" if pairs.n_images == 8 else "test"
        return {k: float(script[(which, self.epoch)]) for k in METRIC_NAMES}
    monkeypatch.setattr(T.Trainer, "evaluate", fake_evaluate)
    r = evaluate(train, test, val=train, epochs=3, eval_every=1, seeds=1, text_model=tiny_text,
                 report_best_on_test=True, cache=False, **TINY)
    assert r["seeds"][0]["reported_epoch"] == 2
    assert r["summary"]["TR@1"]["mean"] == 2.0  # the TEST figure of the val-chosen epoch
    assert "validation" in r["selection"]
    assert r["best_on_test"]["TR@1"]["mean"] == 50.0
    assert BEST_ON_TEST_LABEL in format_table(r)


def test_epochs_zero_scores_the_untrained_model(tiny_sets, tiny_text):
    train, test = tiny_sets
    r = evaluate(train, test, epochs=0, seeds=1, text_model=tiny_text, cache=False, **TINY)
    assert r["seeds"][0]["epochs"][0]["epoch"] == 0 and r["seeds"][0]["train_loss"] == []


def test_resume_reuses_finished_seeds(tiny_sets, tiny_text, tmp_path, monkeypatch):
    import gitd.evaluation.evaluate as E
    train, test = tiny_sets
    out = tmp_path / "r.json"
    real = E.build_model
    calls = []

    def failing(*a, seed, **k):
        calls.append(seed)
        if seed == 1 and len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, seed=seed, **k)
    monkeypatch.setattr(E, "build_model", failing)
    kw = dict(epochs=1, seeds=2, text_model=tiny_text, cache=tmp_path / "c", out=out, **TINY)
    with pytest.raises(KeyboardInterrupt):
        evaluate(train, test, **kw)
    saved = list((tmp_path / "c" / "evaluations").glob("*/seed-*.json"))
    assert [p.name for p in saved] == ["seed-0.json"] and not out.exists()
    r = evaluate(train, test, **kw)
    assert calls == [0, 1, 1]  # seed 0 was not trained again
    assert [s["seed"] for s in r["seeds"]] == [0, 1] and out.is_file()
    # without a cache, finished seeds wait beside --out and go once the results are written
    calls.clear()
    kw.update(cache=False)
    assert evaluate(train, test, **kw)["from_cache"] and calls == []  # --out holds this run
    out.unlink()
    with pytest.raises(KeyboardInterrupt):
        evaluate(train, test, **kw)
    # one folder per (image encoder, text encoder) pair's run key
    assert [p.name for p in (tmp_path / "r.json.partial").glob("*/seed-*.json")] == ["seed-0.json"]
    evaluate(train, test, **kw)
    assert calls == [0, 1, 1] and not (tmp_path / "r.json.partial").exists()


def test_user_errors(tiny_sets, tiny_text, tmp_path):
    train, test = tiny_sets
    with pytest.raises(DataError):
        evaluate(tmp_path / "nope.json", test, text_model=tiny_text, **TINY)
    with pytest.raises(ConfigError, match="seeds must be >= 1, got 0"):
        evaluate(train, test, seeds=0, text_model=tiny_text, **TINY)
    with pytest.raises(ConfigError, match="is a folder"):
        evaluate(train, test, out=tmp_path, text_model=tiny_text, **TINY)


def test_progress_within_epochs_as_log_lines(tiny_sets, tiny_text, tmp_path, monkeypatch, capsys):
    """stderr is not a terminal here: training shows images done and images/s within each
    epoch (batch by batch) as log lines, ONE count over every seed (so its time left covers the
    whole run, issue 20), after an estimate of the whole run; scoring shows its own progress."""
    from gitd.log import setup_logging
    train, test = tiny_sets
    setup_logging(quiet=False)
    monkeypatch.setenv("GITD_PROGRESS_SECONDS", "0")
    evaluate(train, test, epochs=2, seeds=2, text_model=tiny_text, cache=False, **TINY)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    estimate = [line for line in lines if "estimate:" in line]
    # 2 seeds x 2 epochs x 8 images trained; 2 seeds x 2 scoring epochs x 6 test images scored
    assert len(estimate) == 1 and "2 seed(s) x 2 epochs x 8 images: 32 training images and " \
        "24 scored, about" in estimate[0]
    assert lines.index(estimate[0]) < min(i for i, line in enumerate(lines) if "training:" in line)
    training = [line for line in lines if "training: " in line]
    # 8 images in batches of 4: a line per batch, two epochs, two seeds, then where it ended
    assert [line.split("training: ")[1].split(" img")[0] for line in training] == [
        "4/32", "8/32", "12/32", "16/32", "20/32", "24/32", "28/32", "32/32"]
    assert "img/s" in training[0] and "[seed 0, epoch 1/2]" in training[0]
    assert "[seed 0, epoch 2/2, loss " in training[2] and "[seed 1, epoch 1/2" in training[4]
    assert "~" in training[3] and "left" in training[3]  # time left of the whole run
    assert any("seed 0: scoring test: 6/6 img" in line for line in lines)


def test_table_notes_an_encoder_that_stood_in_for_the_papers():
    """An encoder whose info records ``fallback_for`` (auto, offline) gets a note in the table."""
    summary = {k: {"mean": 1.0, "std": 0.0} for k in METRIC_NAMES}
    r = {"summary": summary, "seeds": [{}], "encoders": {
        "image": {"name": "efficientnet_lite0", "fallback_for": "timm:nfnet_l0"},
        "text": {"name": "minilm"}}}
    table = format_table(r)
    assert "NOTE: image encoder efficientnet_lite0 stands in for the papers' timm:nfnet_l0" in table
    assert "text encoder minilm stands in" not in table
