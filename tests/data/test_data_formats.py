import csv
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from gitd.data import Dataset, dataset_fingerprint, load_dataset
from gitd.errors import DataError


def img(path: Path, size=(8, 6), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = 0 if mode in ("L", "I;16", "P", "1") else (0,) * len(mode)
    Image.new(mode, size, color).save(path, format=fmt)
    return path


def write_json(path: Path, obj):
    path.write_text(json.dumps(obj))
    return path


def kinds(ds: Dataset):
    return [p.kind for p in ds.problems]


# ---------------------------------------------------------------- BLIP


def test_blip_rows_grouped_in_first_appearance_order(tmp_path):
    for n in ("b.png", "a.png", "sub/c.png"):
        img(tmp_path / n)
    ann = write_json(tmp_path / "train.json", [
        {"image": "b.png", "caption": "  a   dog ", "image_id": 3},
        {"image": "b.png", "caption": "a cat"},
        {"image": "a.png", "caption": "x"},
        {"image": "./sub//c.png", "caption": ["one", "two"]},
    ])
    ds = load_dataset(ann)
    assert ds.format == "blip" and ds.split is None
    assert [r.id for r in ds] == ["b.png", "a.png", "sub/c.png"]
    assert ds[0].captions == ("a dog", "a cat")
    assert ds[2].captions == ("one", "two")
    assert ds[2].image == (tmp_path / "sub" / "c.png").resolve()
    assert [r.row for r in ds] == [0, 2, 3]
    assert ds.problems == []
    assert ds.source == ann and ds.image_root == tmp_path.resolve()


def test_blip_bad_captions_and_rows_are_problems_naming_the_row(tmp_path):
    img(tmp_path / "a.png")
    img(tmp_path / "b.png")
    ann = write_json(tmp_path / "t.json", [
        {"image": "a.png", "caption": 5},
        {"image": "a.png", "caption": ""},
        {"image": "a.png", "caption": None},
        {"image": "a.png", "caption": ["ok", 3, "   "]},
        {"caption": "no image"},
        {"image": 7, "caption": "int image"},
        "not a dict",
        {"image": "b.png", "caption": None},
    ])
    ds = load_dataset(ann)
    assert [r.id for r in ds] == ["a.png"]
    assert ds[0].captions == ("ok",)
    rows = [(p.row, p.kind) for p in ds.problems]
    assert rows == [(0, "bad-caption"), (1, "empty-caption"), (2, "bad-caption"),
                    (3, "bad-caption"), (3, "empty-caption"), (4, "missing-field"),
                    (5, "bad-path"), (6, "bad-row"), (7, "bad-caption"), (7, "no-caption")]
    assert all(p.file == str(ann) for p in ds.problems)
    assert str(ds.problems[0]).startswith(f"{ann}: row 0: ")


def test_duplicates_are_merged_without_repeating_captions(tmp_path):
    img(tmp_path / "a.png")
    img(tmp_path / "b.png")
    ann = write_json(tmp_path / "t.json", [
        {"image": "a.png", "caption": ["x", "y"]},
        {"image": "b.png", "caption": "z"},
        {"image": "./a.png", "caption": ["y", "w"]},
    ])
    ds = load_dataset(ann, strict=True)  # merging is not a loading problem
    assert [r.id for r in ds] == ["a.png", "b.png"]
    assert ds[0].captions == ("x", "y", "w")


def test_training_rows_group_by_image_id_wherever_they_stand(tmp_path):
    """BLIP's training layout (gitd's own annotations.json): a row per caption, rows of one
    image sharing an image_id, possibly interleaved: one record per image, no duplicate noise."""
    from gitd.data.check import check_dataset

    for n in ("images/0000.png", "images/0001.png", "c.png"):
        img(tmp_path / n)
    ann = write_json(tmp_path / "annotations.json", [
        {"image": "images/0000.png", "caption": "a red one", "image_id": 0},
        {"image": "images/0001.png", "caption": "a blue one", "image_id": 1},
        {"image": "images/0000.png", "caption": "a red one", "image_id": 0},  # COCO repeats
        {"image": "images/0000.png", "caption": "crimson", "image_id": 0},
        {"image": "images/0001.png", "caption": "navy", "image_id": 1},
        {"image": "c.png", "caption": "c", "image_id": 1},  # id 1 names another image
    ])
    ds = load_dataset(ann, strict=True)
    assert [r.id for r in ds] == ["images/0000.png", "images/0001.png", "c.png"]
    assert ds[0].captions == ("a red one", "a red one", "crimson")
    assert ds[1].captions == ("a blue one", "navy")
    report = check_dataset(ann)
    assert [(p["row"], p["kind"]) for p in report.to_dict()["problems"]] == [(5, "duplicate-id")]
    assert load_dataset(tmp_path).source == ann  # the folder finds annotations.json


def test_missing_and_directory_images_are_skipped_without_decoding(tmp_path):
    img(tmp_path / "a.png")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "junk.png").write_bytes(b"not an image")  # not decoded at load time
    ann = write_json(tmp_path / "t.json", [
        {"image": "a.png", "caption": "a"}, {"image": "gone.png", "caption": "g"},
        {"image": "dir.png", "caption": "d"}, {"image": "junk.png", "caption": "j"}])
    ds = load_dataset(ann)
    assert [r.id for r in ds] == ["a.png", "junk.png"]
    assert kinds(ds) == ["missing-image", "bad-image"]
    ds = load_dataset(ann, verify_images=True, workers=1)
    assert [r.id for r in ds] == ["a.png"]
    assert kinds(ds)[-1] == "corrupt-image" and ds.problems[-1].row == 3


def test_outside_root_rejected_unless_allowed(tmp_path):
    root = tmp_path / "root"
    img(root / "in.png")
    outside = img(tmp_path / "outside.png")
    os.symlink(outside, root / "link.png")
    ann = write_json(root / "t.json", [
        {"image": "in.png", "caption": "in"},
        {"image": "../outside.png", "caption": "dotdot"},
        {"image": str(outside), "caption": "absolute"},
        {"image": "link.png", "caption": "symlink"},
        {"image": "sub/../in.png", "caption": "in again, normalised"},
    ])
    ds = load_dataset(ann)
    assert [r.id for r in ds] == ["in.png"]
    assert [(p.row, p.kind) for p in ds.problems] == [(1, "outside-root"), (2, "outside-root"),
                                                      (3, "outside-root")]
    assert "--allow-outside-root" in ds.problems[0].message
    ds = load_dataset(ann, allow_outside_root=True)
    assert [r.id for r in ds] == ["in.png", "../outside.png", str(outside), "link.png"]
    assert ds[1].image == outside and ds.problems == []


def test_braces_in_paths_are_plain_text(tmp_path):
    root = tmp_path / "{root}"
    img(root / "{a}.png")
    ann = write_json(root / "t.json", [{"image": "{a}.png", "caption": "x"},
                                       {"image": "../{b}.png", "caption": "y"}])
    ds = load_dataset(ann)
    assert ds.ids == ["{a}.png"] and "'../{b}.png'" in ds.problems[0].message


def test_images_root_argument(tmp_path):
    img(tmp_path / "imgs" / "a.png")
    (tmp_path / "ann").mkdir()
    ann = write_json(tmp_path / "ann" / "t.json", [{"image": "a.png", "caption": "c"}])
    ds = load_dataset(ann, images=tmp_path / "imgs")
    assert ds[0].image == (tmp_path / "imgs" / "a.png").resolve()
    with pytest.raises(DataError, match="no usable"):
        load_dataset(ann)
    with pytest.raises(DataError, match="not an existing folder"):
        load_dataset(ann, images=tmp_path / "nope")


def test_strict_raises_on_first_problem(tmp_path):
    img(tmp_path / "a.png")
    ann = write_json(tmp_path / "t.json", [{"image": "a.png", "caption": "ok"},
                                           {"image": "a.png", "caption": 5},
                                           {"image": "gone.png", "caption": "x"}])
    with pytest.raises(DataError) as e:
        load_dataset(ann, strict=True)
    assert str(e.value) == f"{ann}: row 1: 'caption' must be a string, got integer 5"
    assert e.value.exit_code == 2


def test_gitd_output_folder(tmp_path):
    from gitd.data.output import OutputPair, write_output

    out = write_output(tmp_path / "out", [OutputPair(Image.new("RGB", (4, 4)), ["a", "b"]),
                                          OutputPair(Image.new("RGB", (4, 4)), ["c"])],
                       {"method": "test"})
    ds = load_dataset(out)
    assert ds.format == "blip" and ds.source == out / "annotations.json"
    assert [(r.id, r.captions) for r in ds] == [("images/0000.png", ("a", "b")),
                                                ("images/0001.png", ("c",))]


# ---------------------------------------------------------------- Karpathy


def karpathy(tmp_path):
    for n in ("tr.jpg", "rv.jpg", "va.jpg", "te.jpg"):
        img(tmp_path / "imgs" / n, fmt="JPEG")
    entries = [
        {"filename": "tr.jpg", "filepath": "imgs", "split": "train",
         "sentences": [{"raw": "a train"}, {"raw": "b train", "tokens": ["b"]}]},
        {"filename": "rv.jpg", "filepath": "imgs", "split": "restval",
         "sentences": [{"raw": "restval"}]},
        {"filename": "va.jpg", "filepath": "imgs", "split": "val", "sentences": [{"raw": "val"}]},
        {"filename": "te.jpg", "filepath": "imgs", "split": "test",
         "sentences": [{"raw": "test"}, {"tokens": ["x"]}]},
    ]
    return write_json(tmp_path / "dataset_coco.json", {"images": entries, "dataset": "coco"})


def test_karpathy_splits(tmp_path):
    ann = karpathy(tmp_path)
    ds = load_dataset(ann)
    assert ds.format == "karpathy" and ds.split == "train"
    assert [r.id for r in ds] == ["imgs/tr.jpg", "imgs/rv.jpg"]
    assert ds[0].captions == ("a train", "b train")
    assert [r.id for r in load_dataset(ann, split="val")] == ["imgs/va.jpg"]
    test = load_dataset(ann, split="test")
    assert [r.id for r in test] == ["imgs/te.jpg"] and test[0].captions == ("test",)
    assert test.problems[0].kind == "bad-caption" and test.problems[0].row == 3
    assert len(load_dataset(ann, split="all")) == 4
    with pytest.raises(DataError, match=r"no images in split 'dev' \(splits present: restval, "
                                        r"test, train, val"):
        load_dataset(ann, split="dev")
    assert dataset_fingerprint(load_dataset(ann)) != dataset_fingerprint(
        load_dataset(ann, split="val"))


def test_karpathy_filename_without_filepath(tmp_path):
    img(tmp_path / "x.jpg", fmt="JPEG")
    ann = write_json(tmp_path / "dataset_flickr30k.json", {"images": [
        {"filename": "x.jpg", "split": "train", "sentences": [{"raw": "x"}]},
        {"split": "train", "sentences": [{"raw": "no filename"}]},
        {"filename": "x.jpg", "sentences": [{"raw": "no split"}]}]})
    ds = load_dataset(ann)
    assert [r.id for r in ds] == ["x.jpg"]
    assert [(p.row, p.kind) for p in ds.problems] == [(1, "missing-field"), (2, "missing-field")]


# ---------------------------------------------------------------- COCO


def test_coco_captions(tmp_path):
    img(tmp_path / "train2017" / "1.jpg", fmt="JPEG")
    img(tmp_path / "train2017" / "2.jpg", fmt="JPEG")
    img(tmp_path / "train2017" / "3.jpg", fmt="JPEG")
    (tmp_path / "annotations").mkdir()
    ann = write_json(tmp_path / "annotations" / "captions_train2017.json", {
        "info": {}, "images": [{"id": 2, "file_name": "2.jpg"}, {"id": 1, "file_name": "1.jpg"},
                               {"id": 3, "file_name": "3.jpg"}, {"id": 1, "file_name": "x.jpg"}],
        "annotations": [{"image_id": 1, "id": 10, "caption": "one a"},
                        {"image_id": 2, "id": 11, "caption": "two"},
                        {"image_id": 1, "id": 12, "caption": "one b"},
                        {"image_id": 99, "id": 13, "caption": "orphan"},
                        {"image_id": 2, "id": 14}]})
    ds = load_dataset(ann, images=tmp_path / "train2017")
    assert ds.format == "coco"
    assert [(r.id, r.captions) for r in ds] == [("2.jpg", ("two",)), ("1.jpg", ("one a", "one b"))]
    assert ds[1].row == 0
    assert sorted(kinds(ds)) == ["duplicate-id", "missing-field", "no-caption", "unknown-image-id"]


def test_images_elsewhere_than_a_karpathy_or_coco_file_get_an_images_hint(tmp_path, capsys):
    """Issue 20, item 13: the field's layouts keep the annotation file apart from the images;
    not finding them under its folder says to pass --images."""
    from gitd.cli import main

    img(tmp_path / "flickr30k-images" / "1.jpg", fmt="JPEG")
    img(tmp_path / "flickr30k-images" / "2.jpg", fmt="JPEG")
    for folder in ("karpathy", "annotations", "blip"):
        (tmp_path / folder).mkdir()
    ann = write_json(tmp_path / "karpathy" / "dataset_flickr30k.json", {"images": [
        {"filename": f"{i}.jpg", "split": "train", "sentences": [{"raw": f"c {i}"}]}
        for i in (1, 2)]})
    with pytest.raises(DataError, match=r"2 of 2 images were not found under \S*karpathy, the "
                                        r"annotation file's folder: karpathy files name their "
                                        r"images relative to the image folder .* pass --images "
                                        r"FOLDER"):
        load_dataset(ann)
    assert len(load_dataset(ann, images=tmp_path / "flickr30k-images")) == 2
    assert main(["check", str(ann)]) == 1
    assert "hint:         2 of 2 images were not found" in capsys.readouterr().out
    coco = write_json(tmp_path / "annotations" / "captions_val2014.json", {
        "images": [{"id": 1, "file_name": "1.jpg"}],
        "annotations": [{"image_id": 1, "id": 5, "caption": "one"}]})
    with pytest.raises(DataError, match="coco files name their images .* --images FOLDER"):
        load_dataset(coco)
    # A BLIP file's paths are relative to its own folder by convention: no such hint.
    blip = write_json(tmp_path / "blip" / "train.json", [{"image": "1.jpg", "caption": "x"}])
    with pytest.raises(DataError) as err:
        load_dataset(blip)
    assert "--images" not in str(err.value)


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_jsonl(tmp_path):
    img(tmp_path / "a.png")
    img(tmp_path / "b.png")
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "text": "a a"}) + "\n\n"
        + json.dumps({"file_name": "b.png", "text": ["b1", "b2"]}) + "\n"
        + "{broken\n" + json.dumps({"text": "no file"}) + "\n")
    ds = load_dataset(tmp_path)
    assert ds.format == "imagefolder" and ds.source == tmp_path / "metadata.jsonl"
    assert [(r.id, r.captions, r.row) for r in ds] == [("a.png", ("a a",), 1),
                                                       ("b.png", ("b1", "b2"), 3)]
    assert [(p.row, p.kind) for p in ds.problems] == [(4, "json"), (5, "missing-field")]
    # the file itself works too, detected by content
    assert len(load_dataset(tmp_path / "metadata.jsonl")) == 2


def test_hugging_face_split_layout(tmp_path, caplog):
    """DATA/train/metadata.jsonl, DATA/test/metadata.csv, DATA/validation/...: --split picks the
    sub-folder (its own image root); a missing split names the folders that exist."""
    from gitd.data.check import check_dataset

    for split, names in (("train", ["a.png", "b.png"]), ("test", ["c.png"]),
                         ("validation", ["d.png"])):
        for n in names:
            img(tmp_path / split / n)
    (tmp_path / "train" / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": n, "text": f"train {n}"}) + "\n"
                for n in ("a.png", "b.png")))
    (tmp_path / "test" / "metadata.csv").write_text("file_name,text\nc.png,test c\n")
    (tmp_path / "validation" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "d.png", "text": "val d"}) + "\n")
    (tmp_path / "notes").mkdir()
    ds = load_dataset(tmp_path)  # default: train
    assert ds.split == "train" and [r.id for r in ds] == ["a.png", "b.png"]
    assert ds.image_root == (tmp_path / "train").resolve()
    test = load_dataset(tmp_path, split="test")
    assert test.split == "test" and test[0].captions == ("test c",)
    assert load_dataset(tmp_path, split="val").split == "validation"  # HF's name for val
    assert load_dataset(tmp_path, split=None, default_split="test").split == "test"
    with pytest.raises(DataError, match=r"no split folder 'dev' \(split folders with "
                                        r"annotations: test, train, validation\)"):
        load_dataset(tmp_path, split="dev")
    assert check_dataset(tmp_path, split="test").summary["split"] == "test"
    # different splits, different fingerprints (the stages' cache keys)
    assert dataset_fingerprint(ds) != dataset_fingerprint(test)
    # a file without splits given a default split: no warning; given one explicitly: a warning
    caplog.clear()
    load_dataset(tmp_path / "train" / "metadata.jsonl", split=None, default_split="test")
    assert "ignored" not in caplog.text
    load_dataset(tmp_path / "train" / "metadata.jsonl", split="test")
    assert "split='test' is ignored" in caplog.text


def test_folder_without_annotations_names_its_sub_folders(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "captions").mkdir()
    with pytest.raises(DataError, match=r"no split sub-folder holding one \(sub-folders: "
                                        r"captions, photos\)"):
        load_dataset(tmp_path)


def test_imagefolder_csv_with_other_column_and_json_lists(tmp_path):
    img(tmp_path / "a.png")
    img(tmp_path / "b.png")
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "description", "score"])
        w.writerow(["a.png", '["x", "y"]', "1"])
        w.writerow(["b.png", "a \"quoted\"\nmulti-line caption", "2"])
    ds = load_dataset(tmp_path)
    assert [(r.id, r.captions) for r in ds] == [("a.png", ("x", "y")),
                                                ("b.png", ('a "quoted" multi-line caption',))]


def test_imagefolder_caption_column_must_be_clear(tmp_path):
    img(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "title": "t", "alt": "u"}) + "\n")
    with pytest.raises(DataError, match="cannot tell which column"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------- unreadable files


@pytest.mark.parametrize("content, match", [
    ('[{"image": "a.png", "caption": "x"},]', r"not valid JSON \(line 1, column 37"),
    ('[\n  {"image": "a.png",\n   "caption": "x"\n', r"not valid JSON \(line 4"),
    ('{"foo": [1, 2]}', "unknown annotation format: a JSON object with keys 'foo'"),
    ('"just a string"', "top level is string"),
    ("[]", "empty dataset"),
    ("", "file is empty"),
    ('{"annotations": []}', "no 'images' list"),
    ('{"images": 3}', "'images' must be a list"),
])
def test_unreadable_annotation_files(tmp_path, content, match):
    ann = tmp_path / "bad.json"
    ann.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        load_dataset(ann)
    assert str(e.value).startswith(str(ann)) and "\n" not in str(e.value)


def test_unreadable_paths(tmp_path):
    with pytest.raises(DataError, match="annotation file not found"):
        load_dataset(tmp_path / "nope.json")
    with pytest.raises(DataError, match="holds no annotations.json"):
        load_dataset(tmp_path)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage\x89")
    with pytest.raises(DataError, match="not a UTF-8 text file"):
        load_dataset(tmp_path / "bin.json")
    (tmp_path / "deep.json").write_text("[" * 100000)
    with pytest.raises(DataError, match="nested too deeply|not valid JSON"):
        load_dataset(tmp_path / "deep.json")


def test_header_only_csv_is_an_empty_dataset(tmp_path):
    from gitd.data.check import check_dataset

    (tmp_path / "metadata.csv").write_text("file_name,text\n")
    for fn in (load_dataset, check_dataset):
        with pytest.raises(DataError, match="empty dataset"):
            fn(tmp_path)


def test_fingerprint_follows_file_bytes(tmp_path):
    img(tmp_path / "a.png")
    ann = write_json(tmp_path / "t.json", [{"image": "a.png", "caption": "x"}])
    f1 = dataset_fingerprint(load_dataset(ann))
    assert f1 == dataset_fingerprint(load_dataset(ann))
    write_json(ann, [{"image": "a.png", "caption": "y"}])
    assert dataset_fingerprint(load_dataset(ann)) != f1
