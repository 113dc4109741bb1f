"""gitd evaluate's printed table shows the chance level of its test set, warns where K is too
large for it and says AT CHANCE (issue 20, item 2; the figures from gitd.retrieval.chance)."""

from __future__ import annotations

from gitd.evaluation.results import format_table
from gitd.retrieval.metrics import METRIC_NAMES


def results(r_mean: float, std: float, images: int, captions: int) -> dict:
    summary = {k: {"mean": r_mean, "std": std} for k in METRIC_NAMES}
    return {"summary": summary, "seeds": [{}, {}], "protocol": "gitd", "epochs": 2,
            "sets": {"test": {"path": "test.json", "images": images, "captions": captions}},
            "test": "test.json", "selection": "last epoch"}


def test_the_demo_is_at_chance():
    table = format_table(results(4.93, 0.40, 100, 500))  # the demo's figure (issue 20)
    chance = next(line for line in table.splitlines() if line.startswith("chance"))
    assert chance.split()[-7:] == ["1.00", "4.92", "9.65", "1.00", "5.00", "10.00", "5.26"]
    assert "AT CHANCE: r_mean 4.93 is within noise of a random ranking's 5.26" in table
    assert "WARNING" not in table


def test_a_tiny_test_set_warns_and_a_real_result_is_not_at_chance():
    table = format_table(results(99.0, 0.5, 4, 4))
    assert "WARNING: K=5 >= 4 test images: IR@5 is 100 for any model" in table
    assert "WARNING: K=10 >= 4 test captions: TR@10 is 100 for any model" in table
    assert "AT CHANCE" not in format_table(results(30.0, 1.0, 100, 500))
    # Results that do not say the test set's size get no chance row, and no error.
    plain = results(30.0, 1.0, 100, 500)
    del plain["sets"]
    assert "chance" not in format_table(plain)
