"""Retrieval evaluation: train the protocol's model on a distilled set, report recall honestly.

See docs/evaluation.md. Stable public API: ``gitd.evaluation.evaluate.evaluate(train, test,
**settings) -> dict`` and ``format_table(results)``. The retrieval model, its training, its
protocols and metrics live in ``gitd.retrieval`` (below both evaluation and the selections that
train it, such as forgetting); the encoders in ``gitd.models.encoders``; cached frozen features in
``gitd.models.features``.
"""

__all__ = ["evaluate", "format_table"]


def __getattr__(name):
    # torch/timm/transformers load only when an evaluation is actually asked for.
    if name in ("evaluate", "format_table"):
        from gitd.evaluation import evaluate as _m
        return getattr(_m, name)
    raise AttributeError(name)
