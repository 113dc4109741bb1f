"""Suite-wide settings and the small image-caption sets several test folders share.

One intra-op thread: the tests' models are tiny, so a second thread buys nothing, and when the
machine is busy OpenMP's spin-waiting threads make small ops up to 50x slower (measured: a tiny
BLIP caption call took 18 s with 2 threads under load, 0.3 s with 1). Subprocesses inherit the
environment variables. The hub is never contacted from tests.
"""

import json
import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30), "black": (10, 10, 10), "white": (245, 245, 245),
           "purple": (140, 30, 160), "orange": (240, 140, 20)}


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory):
    from gitd.evaluation.tiny import write_tiny_text_model
    return str(write_tiny_text_model(tmp_path_factory.mktemp("tiny-text")))


def write_set(folder, names, *, captions_per_image=1, size=40, file="set.json", prefix=""):
    """A BLIP JSON set of flat-colour images with one caption list per image."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    rows = []
    rng = np.random.default_rng(len(names))
    for i, name in enumerate(names):
        arr = np.zeros((size, size, 3), np.uint8) + np.array(COLOURS[name], np.uint8)
        arr[: size // 2, : size // 2] = rng.integers(0, 255, 3)  # some texture
        path = f"images/{prefix}{i:03d}-{name}.png"
        Image.fromarray(arr).save(folder / path)
        caps = [f"a {name} picture number {j}" for j in range(captions_per_image)]
        rows.append({"image": path, "caption": caps})
    (folder / file).write_text(json.dumps(rows))
    return folder / file


@pytest.fixture
def set_writer():
    """``write_set`` for tests that build their own sets (a fixture, because ``import conftest``
    is ambiguous when several test folders have one)."""
    return write_set


@pytest.fixture
def tiny_sets(tmp_path):
    names = list(COLOURS)
    train = write_set(tmp_path / "data", names, file="train.json", prefix="tr")
    test = write_set(tmp_path / "data", names[:6], captions_per_image=2, file="test.json",
                     prefix="te")
    return train, test
