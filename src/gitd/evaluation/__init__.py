"""Retrieval evaluation: train the protocol's model on a set, report recall honestly.

See docs/evaluation.md. Stable public API: ``gitd.evaluation.evaluate.evaluate(train, test,
**settings) -> dict`` and ``gitd.evaluation.evaluate.format_table(results)``; ``from
gitd.evaluation import evaluate`` gives the module ``gitd.evaluation.evaluate``, which can be
called as the function too. The retrieval model, its training, its protocols and metrics live in
``gitd.retrieval``; the encoders in ``gitd.models.encoders``.
"""

import importlib


def __getattr__(name):
    # torch/timm/transformers load only when an evaluation is actually asked for. The module
    # is imported by its full name: ``from gitd.evaluation import evaluate`` inside this hook
    # would call the hook again, for ever.
    if name in ("evaluate", "format_table"):
        module = importlib.import_module("gitd.evaluation.evaluate")
        return module if name == "evaluate" else module.format_table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
