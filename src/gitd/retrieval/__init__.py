"""The retrieval model (image and text encoders with projection heads), its training protocols,
its training loop and recall@K metrics.

Below both ``gitd.evaluation`` (which trains it on a distilled set and tests it) and
``gitd.methods`` (the forgetting selection trains it on the full set): neither imports the
other. Public API: ``gitd.retrieval.train.train(train_set, ..., on_epoch_end=cb) -> Trainer``
with ``Trainer.embed()`` and ``Trainer.learned()``; ``get_protocol(name, **overrides)``
(``.protocols``); ``retrieval_metrics(image_emb, text_emb, text_to_image)`` (``.metrics``).
"""
