"""One guard around every image decode: whatever a decoder raises, and an image too elongated to
resize safely, becomes one per-row problem in check, distill, select and evaluate, in the main
process, DataLoader workers and process pools alike (issue 11, classes 5 and 8)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gitd.config import make_config
from gitd.data.check import check_dataset
from gitd.data.images import ImageError, open_rgb, resize_cover
from gitd.methods.coreset import select_coreset
from gitd.methods import distill


def dds_with_unknown_pixel_format(path: Path) -> None:
    """PIL's DDS decoder raises NotImplementedError on a pixel format it does not know."""
    head = struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44
    pixel_format = struct.pack("<2I", 32, 0x4) + b"XYZW" + b"\0" * 20
    path.write_bytes(b"DDS " + head + pixel_format + struct.pack("<5I", 0x1000, 0, 0, 0, 0)
                     + b"\0" * 64)


def blp_with_bad_compression(path: Path) -> None:
    """PIL's BLP decoder raises BLPFormatError (a NotImplementedError) here."""
    path.write_bytes(b"BLP1" + struct.pack("<I", 7) + struct.pack("<B3x", 0)
                     + struct.pack("<2I", 4, 4) + b"\0" * 2072)


def strip(path: Path) -> None:
    """1 x 150,000 px: a few hundred bytes that would need gigabytes once resized."""
    Image.new("RGB", (1, 150_000), (200, 10, 10)).save(path)


BAD = {"odd.dds": (dds_with_unknown_pixel_format, "unsupported-image", "NotImplementedError"),
       "odd.blp": (blp_with_bad_compression, "unsupported-image", "BLPFormatError"),
       "strip.png": (strip, "extreme-aspect", "1x150000 px")}


def dataset(root: Path, good: int) -> Path:
    """``good`` ordinary images, then the three hostile files, as a BLP/LoRS annotation file."""
    (root / "images").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(good):
        arr = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "images" / f"{i:03d}.png")
        rows.append({"image": f"images/{i:03d}.png", "caption": [f"picture number {i}"]})
    for name, (make, _, _) in BAD.items():
        make(root / "images" / name)
        rows.insert(3, {"image": f"images/{name}", "caption": [f"a hostile {name}"]})
    (root / "train.json").write_text(json.dumps(rows))
    return root / "train.json"


def assert_all_bad_listed(problems: list[dict]) -> None:
    """Each hostile file is one problem (naming it in ``file`` or in the message)."""
    for name, (_, kind, words) in BAD.items():
        mine = [p for p in problems if name in p["file"] + p["problem"]]
        assert len(mine) == 1, (name, problems)
        assert mine[0]["kind"] == kind and words in mine[0]["problem"], mine


@pytest.mark.parametrize("name", list(BAD))
def test_open_rgb_turns_each_decoder_failure_into_an_image_error(tmp_path, name):
    make, kind, words = BAD[name]
    make(tmp_path / name)
    with pytest.raises(ImageError) as err:
        open_rgb(tmp_path / name)
    assert err.value.kind == kind and words in err.value.problem and name in str(err.value)


def test_any_exception_from_a_decoder_is_caught(tmp_path, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")

    def explode(self):
        raise ZeroDivisionError("a decoder bug")

    monkeypatch.setattr(Image.Image, "load", explode)
    with pytest.raises(ImageError, match="ZeroDivisionError: a decoder bug"):
        open_rgb(tmp_path / "ok.png")


def test_resizing_is_bounded_by_the_output_size(monkeypatch):
    sizes = []
    real = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sizes.append(size)
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    wide = Image.new("RGB", (4000, 200), (1, 2, 3))  # 20:1, the longest ratio accepted
    assert resize_cover(wide, 512).size == (512, 512)
    assert max(w * h for w, h in sizes) <= 4 * 512 * 512
    photo = Image.new("RGB", (640, 480))
    sizes.clear()
    assert resize_cover(photo, 512).size == (512, 512) and sizes == [(683, 512)]


def test_check_lists_them_from_a_process_pool(tmp_path):
    report = check_dataset(dataset(tmp_path, good=64), workers=2)  # >= 64 images: a pool
    assert report.exit_code == 1
    assert report.summary["images"] == 64
    assert_all_bad_listed([p.to_dict() for p in report.problems])


def test_distill_skips_them_in_dataloader_workers(tmp_path):
    data = dataset(tmp_path / "d", good=8)
    out = tmp_path / "out"
    distill(data, out, make_config(
        "tiny", pairs=3, seed=0, device="cpu", encode_workers=1, diffusion=False,
        captioner_on=False))
    manifest = json.loads((out / "manifest.json").read_text())
    assert_all_bad_listed(manifest["skipped"])
    assert manifest["pairs"] == 3


def test_select_and_evaluate_skip_them(tmp_path):
    from gitd.evaluation.evaluate import evaluate
    from gitd.evaluation.tiny import write_tiny_text_model

    data = dataset(tmp_path / "d", good=17)  # 20 images: decoding uses a DataLoader worker
    cache = tmp_path / "cache"
    out = tmp_path / "sel"
    select_coreset(data, "herding", 4, out, image_size=32, cache=cache, device="cpu")
    manifest = json.loads((out / "manifest.json").read_text())
    assert_all_bad_listed(manifest["skipped"])
    assert not {Path(i["source_image"]).name for i in manifest["items"]} & set(BAD)
    assert manifest["source"]["n_valid"] == 17

    text = write_tiny_text_model(tmp_path / "text")
    results = evaluate(data, data, epochs=1, seeds=1, image_model="timm:resnet10t",
                       pretrained=False, text_model=str(text), image_size=32, batch_size=8,
                       workers=1, cache=cache, device="cpu", allow_test_overlap=True)
    for split in ("train", "test"):
        assert results["sets"][split]["images"] == 17
        assert_all_bad_listed(results["sets"][split]["skipped"])


def test_a_decoder_that_kills_its_worker_process_is_one_line(tmp_path, monkeypatch):
    """A decoder crashing the interpreter takes down a worker, not the run: one GitdError."""
    import os
    import signal

    import gitd.data.images
    import gitd.stages.encode
    from gitd.errors import GitdError

    parent = os.getpid()
    real = gitd.data.images.open_rgb

    def crash_in_worker(path, **kwargs):
        if os.getpid() != parent and str(path).endswith("005.png"):
            os.kill(os.getpid(), signal.SIGKILL)  # as a segfaulting C decoder would
        return real(path, **kwargs)

    data = dataset(tmp_path / "d", good=8)
    monkeypatch.setattr(gitd.stages.encode, "open_rgb", crash_in_worker)
    with pytest.raises(GitdError, match="a process decoding images died .*--encode-workers 0"):
        distill(data, tmp_path / "out", make_config(
            "tiny", pairs=3, seed=0, device="cpu", encode_workers=1, diffusion=False,
            captioner_on=False))
    monkeypatch.setattr(gitd.data.images, "open_rgb", crash_in_worker)
    with pytest.raises(GitdError, match="crashed a worker"):
        check_dataset(dataset(tmp_path / "e", good=64), workers=2)
