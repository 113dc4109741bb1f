"""The output's metadata.jsonl as Hugging Face's own loader reads it (issue 20, item 4): ``text``
is always a list, so ``datasets`` loads a set mixing one- and several-caption images, and
concatenates two gitd outputs; gitd still reads outputs written with a string ``text``."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from gitd.data import load_dataset
from gitd.data.output import OutputPair, write_output

datasets = pytest.importorskip("datasets")  # the dev extra has it


def output(root, name, captions_per_pair):
    pairs = [OutputPair(Image.new("RGB", (16, 16), (40 * i, 90, 200)),
                        [f"{name} picture {i}, caption {j}" for j in range(n)])
             for i, n in enumerate(captions_per_pair)]
    return write_output(root / name, pairs, {"method": "test"})


def hf_load(folder, cache):
    return datasets.load_dataset("imagefolder", data_dir=str(folder), split="train",
                                 cache_dir=str(cache))


def test_text_is_always_a_list(tmp_path):
    out = output(tmp_path, "mixed", [1, 3, 1])
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [type(line["text"]) for line in lines] == [list, list, list]
    assert [len(line["text"]) for line in lines] == [1, 3, 1]


def test_datasets_loads_a_mixed_output_and_concatenates_two(tmp_path):
    mixed = output(tmp_path, "mixed", [1, 3, 1, 2])
    single = output(tmp_path, "single", [1, 1])
    a, b = hf_load(mixed, tmp_path / "hf"), hf_load(single, tmp_path / "hf")
    assert len(a) == 4 and a[1]["text"] == [f"mixed picture 1, caption {j}" for j in range(3)]
    assert a[0]["text"] == ["mixed picture 0, caption 0"]
    assert a[2]["image"].size == (16, 16)
    both = datasets.concatenate_datasets([a, b])
    assert len(both) == 6 and both[5]["text"] == ["single picture 1, caption 0"]
    # The images are matched to their rows by file name, as gitd wrote them.
    assert [tuple(im.getpixel((0, 0))) for im in both["image"][:2]] == [(0, 90, 200),
                                                                        (40, 90, 200)]


def test_gitd_reads_string_and_list_text(tmp_path):
    out = output(tmp_path, "old", [1, 2])
    (out / "annotations.json").unlink()  # read through metadata.jsonl alone
    lines = (out / "metadata.jsonl").read_text().splitlines()
    old = [json.loads(line) for line in lines]
    old[0]["text"] = old[0]["text"][0]  # as gitd wrote one caption before: a string
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    ds = load_dataset(out)
    assert ds.format == "imagefolder"
    assert [list(r.captions) for r in ds] == [["old picture 0, caption 0"],
                                             ["old picture 1, caption 0",
                                              "old picture 1, caption 1"]]
