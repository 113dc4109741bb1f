"""gitd: generative image-text dataset distillation.

The package reads left to right as the pipeline: ``data`` (users' datasets in), ``models``
(the registry of named model presets), ``stages`` (encode, cluster, generate, caption, embed),
``methods`` (recipes chaining stages: gitd, pds, coreset selections), ``evaluation`` (retrieval
training and metrics) and ``report`` (HTML out).
"""

__version__ = "0.1.0"
