"""The retrieval model (image and text encoders with projection heads), the papers' evaluation
protocols as presets, the pairs it trains on, its training loop, losses and recall@K metrics.

Below both ``gitd.evaluation`` (which trains it on a distilled set and tests it) and
``gitd.methods`` (the forgetting selection trains it on the full set): neither imports the
other. Public API: ``gitd.retrieval.train.train(train_set, ..., on_epoch_end=cb) -> Trainer``
with ``Trainer.embed()`` and ``Trainer.learned()``; ``prepare_pairs`` / ``tensor_pairs``
(``.pairs``); ``get_protocol(name, **overrides)`` and ``PROTOCOL_PRESETS`` (``.protocols``);
``retrieval_metrics(image_emb, text_emb, text_to_image)`` (``.metrics``).
"""
