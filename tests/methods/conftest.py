from pathlib import Path

import pytest

from gitd.data.shapes import make_shapes


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    """40 train images of the stand-in dataset at 64 px, shared by the method tests (read
    only: a test that needs a broken variant writes its own annotation file beside it)."""
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, train=40, test=8, size=64, seed=3, workers=1)
    return root / "train.json"


@pytest.fixture(scope="session")
def output_files():
    """What must be identical between an interrupted-and-resumed run and an uninterrupted one:
    ``output_files(OUT)`` -> {relative path: bytes} of the images, annotations and metadata."""
    def read(out: Path) -> dict[str, bytes]:
        files = {p.relative_to(out).as_posix(): p.read_bytes()
                 for p in sorted((out / "images").iterdir())}
        for name in ("annotations.json", "metadata.jsonl"):
            files[name] = (out / name).read_bytes()
        return files
    return read
