"""Retrieval evaluation: encoders, the protocol's model, training, metrics and honest reports.

See docs/evaluation.md. Stable public API:

* ``gitd.evaluation.evaluate.evaluate(train, test, **settings) -> dict`` and
  ``format_table(results)``;
* ``retrieval_metrics(image_emb, text_emb, text_to_image) -> dict`` (``.metrics``);
* ``embed_images(paths, image_model, ...)``, ``embed_texts(texts, text_model, ...)``
  (``.features``): frozen features, cached;
* ``gitd.evaluation.train.train(train_set, ..., on_epoch_end=cb) -> Trainer`` with ``Trainer.embed()`` and
  ``Trainer.learned()`` (``.train``); ``get_protocol(name, **overrides)`` (``.protocols``).
"""

from gitd.evaluation.metrics import retrieval_metrics
from gitd.evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOLS, Protocol, get_protocol

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "Protocol", "embed_images", "embed_texts",
           "format_table", "get_protocol", "retrieval_metrics"]


def __getattr__(name):
    # torch/timm/transformers load only when training or embedding is actually asked for.
    # (evaluate and train are submodules too, so their functions are not re-exported here.)
    if name == "format_table":
        from gitd.evaluation import evaluate as _m
        return _m.format_table
    if name in ("embed_images", "embed_texts"):
        from gitd.evaluation import features as _m
        return getattr(_m, name)
    raise AttributeError(name)
