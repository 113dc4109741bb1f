"""Suite-wide settings.

One intra-op thread: the tests' models are tiny, so a second thread buys nothing, and when the
machine is busy OpenMP's spin-waiting threads make small ops up to 50x slower (measured: a tiny
BLIP caption call took 18 s with 2 threads under load, 0.3 s with 1). Subprocesses inherit the
environment variables. The hub is never contacted from tests.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)
