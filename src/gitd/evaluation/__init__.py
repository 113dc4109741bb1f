"""Retrieval evaluation: encoders, the protocol's model, training, metrics and honest reports.

See docs/evaluation.md. Stable public API:

* ``evaluate(train, test, **settings) -> dict`` and ``format_table(results)``
  (``gitd.evaluation.evaluate``);
* ``retrieval_metrics(image_emb, text_emb, text_to_image) -> dict`` (``.metrics``);
* ``embed_images(paths, image_model, ...)``, ``embed_texts(texts, text_model, ...)``
  (``.features``): frozen features, cached;
* ``train(train_set, ..., on_epoch_end=cb) -> Trainer`` with ``Trainer.embed()`` and
  ``Trainer.learned()`` (``.train``); ``get_protocol(name, **overrides)`` (``.protocols``).
"""

from gitd.evaluation.metrics import retrieval_metrics
from gitd.evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOLS, Protocol, get_protocol

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "Protocol", "embed_images", "embed_texts", "evaluate",
           "format_table", "get_protocol", "retrieval_metrics", "train"]


def __getattr__(name):
    # torch/timm/transformers load only when training or embedding is actually asked for.
    if name in ("evaluate", "format_table"):
        from gitd.evaluation import evaluate as _m
        return getattr(_m, name)
    if name in ("embed_images", "embed_texts"):
        from gitd.evaluation import features as _m
        return getattr(_m, name)
    if name == "train":
        from gitd.evaluation import train as _m
        return _m.train
    raise AttributeError(name)
