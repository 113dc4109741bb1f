"""The papers' evaluators as presets (issue 21, item 3): each field as its released code has
it (the sources are named in gitd/retrieval/protocols.py and docs/evaluation.md)."""

import dataclasses

import pytest

from gitd.retrieval.protocols import PROTOCOL_PRESETS, PROTOCOLS, Protocol, get_protocol
from gitd.settings import declared


def _fields(name, *keys):
    p = PROTOCOLS[name]
    return tuple(getattr(p, k) for k in keys)


KEYS = ("optimizer", "lr", "momentum", "weight_decay", "epochs", "batch_size", "lr_schedule",
        "batches", "drop_last", "loss", "augment", "freeze_image", "image_output", "eval_every")


@pytest.mark.parametrize("name,expected", [
    ("gitd", ("adamw", 5e-4, 0.9, 5e-4, 400, 32, "constant", "shuffle", False, "infonce",
              "none", False, "pooled", None)),
    ("mtt-vl", ("sgd", 0.1, 0.9, 5e-4, 50, 64, "constant", "shuffle", False, "infonce",
                "none", False, "pooled", 50)),
    ("lors", ("sgd", 0.1, 0.9, 5e-4, 100, 128, "step_half", "random", False, "wbce", "none",
              False, "pooled", 10)),
    ("pds", ("sgd", 0.2, 0.9, 5e-4, 100, 128, "step_half", "random", False, "infonce", "none",
             True, "logits", 10)),
    ("edge", ("sgd", 0.1, 0.0, 0.0, 100, 64, "constant", "shuffle", True, "infonce", "blip",
              False, "pooled", 5)),
])
def test_presets_follow_the_released_evaluators(name, expected):
    assert _fields(name, *KEYS) == expected
    assert PROTOCOLS[name].name == name


def test_every_field_is_declared_and_every_preset_validates():
    names = {f.name for f, _ in declared(Protocol)}
    assert names == {f.name for f in dataclasses.fields(Protocol)}
    for name, values in PROTOCOL_PRESETS.items():
        assert set(values) <= names
        get_protocol(name)  # validates


def test_overrides_start_from_the_preset():
    p = get_protocol("pds", epochs=3, freeze_image=False)
    assert (p.epochs, p.freeze_image, p.lr, p.image_output) == (3, False, 0.2, "logits")
