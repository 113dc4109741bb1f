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


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shard_set(tmp_path_factory):
    """The stand-in dataset twice: a BLIP annotation file and the same samples written as
    WebDataset shards by ``webdataset``'s own ShardWriter (5 samples a shard, PNG + TXT + JSON).
    Returns (annotation file, shards folder, brace pattern); read only."""
    import json

    import webdataset as wds

    from gitd.data import load_dataset
    from gitd.data.shapes import make_shapes

    root = tmp_path_factory.mktemp("shard-set")
    make_shapes(root / "data", train=24, test=6, size=64, seed=5, workers=1)
    ann = root / "data" / "train.json"
    shards = root / "shards"
    shards.mkdir()
    with wds.ShardWriter(str(shards / "%05d.tar"), maxcount=5, verbose=0) as sink:
        for i, rec in enumerate(load_dataset(ann)):
            sink.write({"__key__": f"{i:06d}", "png": rec.image.read_bytes(),
                        "txt": "\n".join(rec.captions), "json": json.dumps({"source": rec.id})})
    return ann, shards, str(shards / "{00000..00004}.tar")
