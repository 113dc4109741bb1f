"""The whole run estimated up front, and CPU advice (issue 20, item 7)."""

import pytest

import gitd.evaluation.estimate as estimate
from gitd.evaluation.evaluate import evaluate
from gitd.log import setup_logging

TINY = dict(image_model="timm:resnet10t", pretrained=False, image_size=32, batch_size=4,
            lr=1e-3, workers=0)


def test_a_long_cpu_run_says_how_to_run_the_cpu_settings(tiny_sets, tiny_text, capsys,
                                                         monkeypatch):
    train, test = tiny_sets
    setup_logging(quiet=True)  # warnings still show
    monkeypatch.setattr(estimate, "CPU_ADVICE_SECONDS", 0)
    evaluate(train, test, epochs=1, seeds=2, text_model=tiny_text, cache=False, device="cpu",
             **TINY)
    err = capsys.readouterr().err
    assert err.count("runs the GPU protocol on the CPU") == 1
    assert "--epochs 5 --image-size 128" in err and "--freeze-image" in err


def test_the_estimate_counts_every_seed_and_pair(tiny_sets, tiny_text, monkeypatch):
    train, test = tiny_sets
    seen = []
    monkeypatch.setattr("gitd.evaluation.evaluate.announce",
                        lambda work, *a, **k: seen.append((work.trained, work.scored, k["what"])))
    evaluate(train, test, epochs=2, seeds=3, text_model=tiny_text, cache=False,
             image_model="timm:resnet10t,timm:resnet14t", **{k: v for k, v in TINY.items()
                                                             if k != "image_model"})
    # once, before anything trains: 2 pairs x 3 seeds x 2 epochs x 8 images; scoring 6 test
    # images at 2 epochs
    assert seen == [(2 * 3 * 2 * 8, 2 * 3 * 2 * 6, "3 seed(s) x 2 epochs x 8 images x 2 encoder "
                     "pairs (timed on the first)")]


def test_time_steps_are_positive_and_leave_the_model_untouched(tiny_sets, tiny_text):
    import torch

    from gitd.data import load_dataset
    from gitd.models.encoders import build_image_encoder, build_text_encoder
    from gitd.retrieval.losses import info_nce
    from gitd.retrieval.pairs import prepare_pairs
    from gitd.retrieval.protocols import get_protocol
    from gitd.retrieval.train import build_model

    prot = get_protocol("gitd", image_size=32, batch_size=4)
    enc = build_image_encoder("timm:resnet10t", pretrained=False)
    txt = build_text_encoder(tiny_text)
    pairs = prepare_pairs(load_dataset(tiny_sets[0]), enc, txt, prot, cache=False, workers=0)
    model = build_model(enc, txt.dim, prot, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    train_s, score_s = estimate.time_steps(model, pairs, prot, info_nce, torch.device("cpu"))
    assert train_s > 0 and score_s > 0
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("seconds,text", [(42, "42 s"), (125, "2 min 05 s"),
                                          (3 * 3600 + 19 * 60, "3 h 19 min")])
def test_clock(seconds, text):
    assert estimate._clock(seconds) == text
