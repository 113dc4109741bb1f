"""WebDataset shards as input: records, ids, problems by shard and key, streaming reads."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from PIL import Image

from gitd.data import load_dataset
from gitd.data.check import check_dataset
from gitd.data.images import open_rgb
from gitd.data.shards import TarMember
from gitd.errors import DataError


def test_shards_read_back_as_the_equivalent_annotation_file(shard_set):
    ann, folder, pattern = shard_set
    plain = load_dataset(ann)
    for source in (folder, pattern):
        ds = load_dataset(source)
        assert ds.format == "webdataset" and not ds.problems
        assert [r.captions for r in ds] == [r.captions for r in plain]
        assert [r.image.read_bytes() for r in ds] == [r.image.read_bytes() for r in plain]
        assert all(isinstance(r.image, TarMember) for r in ds)
        assert [r.id for r in ds][:6] == [f"00000/{i:06d}" for i in range(5)] + ["00001/000005"]
    one = load_dataset(folder / "00002.tar")
    assert [r.id for r in one] == [f"00002/{i:06d}" for i in range(10, 15)]
    assert open_rgb(one[0].image).size == (64, 64)


def test_ids_stable_across_runs_and_shard_order(shard_set):
    _, folder, pattern = shard_set
    assert load_dataset(folder).ids == load_dataset(pattern).ids == load_dataset(folder).ids


def _tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _png(colour=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def broken_shards(tmp_path):
    good = _png()
    folder = tmp_path / "broken"
    folder.mkdir()
    _tar(folder / "a.tar", [("k1.png", good), ("k1.txt", b"a red square"),
                            ("k2.jpg", b"\xff\xd8 not really a jpeg"), ("k2.txt", b"broken"),
                            ("k3.png", good),                          # no caption
                            ("k4.png", good), ("k4.txt", b"  \n \n"),  # empty caption
                            ("k5.txt", b"caption without an image")])
    _tar(folder / "b.tar", [("k6.webp", b"RIFF\x00\x00"), ("k6.txt", b"bad webp"),
                            ("k7.png", good), ("k7.txt", b"line one\nline two\n")])
    (folder / "c.tar").write_bytes(b"not a tar at all" * 40)
    return folder


def test_check_names_every_broken_member_by_shard_and_key(broken_shards):
    report = check_dataset(broken_shards, workers=1)
    assert report.exit_code == 1
    text = report.format_text()
    lines = [str(p) for p in report.problems]
    expected = {("a.tar", "'k2.jpg'", "corrupt-image"), ("a.tar", "'k3'", "no-caption"),
                ("a.tar", "'k4'", "empty-caption"), ("a.tar", "'k5'", "missing-image"),
                ("b.tar", "'k6.webp'", "corrupt-image"), ("c.tar", "", "bad-shard")}
    found = {(p.file.rsplit("/", 1)[-1], p.kind) for p in report.problems}
    assert found == {(s, k) for s, _, k in expected}, text
    for shard, key, _ in expected:
        assert any(shard in line and key in line for line in lines), (shard, key, text)
    assert report.summary["images"] == 2
    assert [r.captions for r in report.dataset] == [("a red square",), ("line one", "line two")]


def test_a_broken_member_is_skipped_not_fatal(broken_shards):
    ds = load_dataset(broken_shards)
    # Loading does not decode: the two undecodable images stay until a stage opens them.
    assert {r.id for r in ds} == {"a/k1", "a/k2", "b/k6", "b/k7"}
    assert {p.kind for p in ds.problems} == {"no-caption", "empty-caption", "missing-image",
                                             "bad-shard"}
    with pytest.raises(DataError, match="k3"):
        load_dataset(broken_shards, strict=True)


def test_members_are_read_by_offset_not_by_reading_the_shard(shard_set, monkeypatch):
    _, folder, _ = shard_set
    rec = load_dataset(folder)[7]
    sizes = []
    real = TarMember.read_bytes

    def spy(self):
        data = real(self)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(TarMember, "read_bytes", spy)
    open_rgb(rec.image)
    assert sizes == [rec.image.size] and rec.image.size < (folder / "00001.tar").stat().st_size / 3


def test_truncated_shard_and_missing_pattern_shards(shard_set, tmp_path):
    _, folder, _ = shard_set
    data = (folder / "00000.tar").read_bytes()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "x.tar").write_bytes(data[: len(data) // 2])
    report = check_dataset(cut, workers=1)
    assert report.exit_code == 1 and report.problems
    assert all("x.tar" in str(p) for p in report.problems)
    with pytest.raises(DataError, match="2 of 7 shards not found"):
        load_dataset(str(folder / "{00000..00006}.tar"))


def test_annotation_file_in_a_folder_of_shards_wins(shard_set, tmp_path):
    ann, folder, _ = shard_set
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "00000.tar").write_bytes((folder / "00000.tar").read_bytes())
    (mixed / "annotations.json").write_text(json.dumps([{"image": "x.png", "caption": "c"}]))
    with pytest.raises(DataError):  # the annotation file is read (its image is missing)
        load_dataset(mixed)
