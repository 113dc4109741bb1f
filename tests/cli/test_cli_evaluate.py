import json
import os

import pytest
from PIL import Image

from gitd.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_text_folder(tmp_path_factory):
    from gitd.evaluation.tiny import write_tiny_text_model
    return str(write_tiny_text_model(tmp_path_factory.mktemp("cli-tiny-text")))


def _set(folder, colours, file):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, c in enumerate(colours):
        Image.new("RGB", (24, 24), c).save(folder / "images" / f"{file}{i}.png")
        rows.append({"image": f"images/{file}{i}.png", "caption": [f"colour {c[0]} {c[1]}"]})
    (folder / f"{file}.json").write_text(json.dumps(rows))
    return str(folder / f"{file}.json")


def test_cli_evaluate_prints_table_and_writes_results(tmp_path, tiny_text_folder, capsys):
    cols = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250)]
    train = _set(tmp_path, cols, "train")
    test = _set(tmp_path, [(r // 2, g // 2, b // 2) for r, g, b in cols[::-1]], "test")
    out = tmp_path / "r.json"
    rc = main(["evaluate", "--train", train, "--test", test, "--epochs", "1", "--seeds", "2",
               "--image-model", "timm:resnet10t", "--no-pretrained", "--text-model",
               tiny_text_folder, "--image-size", "32", "--batch-size", "4", "--cache",
               str(tmp_path / "c"), "--out", str(out), "--report-best-on-test", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for k in ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "r_mean", "±",
              "best epoch ON TEST (optimistic, for comparison with papers only)"):
        assert k in captured.out
    r = json.loads(out.read_text())
    assert len(r["seeds"]) == 2 and r["seeds"][0]["epochs"][0]["epoch"] == 1
    assert r["summary"]["r_mean"]["std"] >= 0


@pytest.mark.parametrize("extra,needle", [
    (["--train", "/nonexistent/train.json"], "/nonexistent/train.json"),
    (["--seeds", "0"], "--seeds: must be an integer in [1, 1000], got '0'"),
    (["--epochs", "-1"], "--epochs: must be an integer in [0, 100000], got '-1'"),
    (["--image-model", "timm:no_such_net"], "no_such_net"),
    (["--device", "tpu:9"], "device"),
])
def test_cli_evaluate_user_errors_are_one_line(tmp_path, tiny_text_folder, capsys, extra, needle):
    train = _set(tmp_path, [(250, 0, 0), (0, 0, 250)], "train")
    test = _set(tmp_path, [(90, 0, 0), (0, 0, 90)], "test")
    args = ["evaluate", "--train", train, "--test", test, "--text-model", tiny_text_folder,
            "--no-pretrained", "--image-model", "timm:resnet10t", "--cache", str(tmp_path / "c")]
    rc = main(args + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("gitd evaluate: error: ") and needle in err[-1]
    assert not any("Traceback" in line for line in err)


# -- splits, overlap with the pairs' source, cached results ---------------------------------


def _karpathy(folder):
    """A Karpathy split file: 6 train, 3 test, 2 val images, each a distinct texture."""
    import numpy as np
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for i, split in enumerate(["train"] * 6 + ["test"] * 3 + ["val"] * 2):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            folder / "imgs" / f"{i}.png")
        entries.append({"filename": f"{i}.png", "filepath": "imgs", "split": split,
                        "sentences": [{"raw": f"picture {i} of {split}"}, {"raw": f"shot {i}"}]})
    path = folder / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    return path


@pytest.fixture
def karpathy_and_pairs(tmp_path):
    from gitd.methods.coreset import select_coreset
    data = _karpathy(tmp_path / "data")
    out = tmp_path / "pairs"
    select_coreset(data, "random", 3, out, seed=0)  # from the train split
    return data, out


def _evaluate(tmp_path, tiny_text_folder, train, test, *extra):
    return main(["evaluate", "--train", str(train), "--test", str(test), "--epochs", "1",
                 "--seeds", "1", "--image-model", "timm:resnet10t", "--no-pretrained",
                 "--text-model", tiny_text_folder, "--image-size", "32", "--batch-size", "4",
                 "--cache", str(tmp_path / "c"), "--workers", "0", "-q", *extra])


def test_karpathy_test_file_evaluates_its_test_split(karpathy_and_pairs, tmp_path,
                                                     tiny_text_folder, capsys):
    data, pairs = karpathy_and_pairs
    out = tmp_path / "r.json"
    rc = _evaluate(tmp_path, tiny_text_folder, pairs, data, "--val", str(data), "--out", str(out))
    printed = capsys.readouterr().out
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["splits"] == {"train": None, "test": "test", "val": "val"}
    assert r["sets"]["test"]["images"] == 3 and r["sets"]["val"]["images"] == 2
    assert r["test_overlap"]["images"] == 0
    assert f"test: {data}, split test (3 images, 6 captions)" in printed
    assert f"val: {data}, split val (2 images, 4 captions)" in printed


def test_test_split_sharing_the_pairs_source_is_refused_or_flagged(
        karpathy_and_pairs, tmp_path, tiny_text_folder, capsys):
    data, pairs = karpathy_and_pairs
    rc = _evaluate(tmp_path, tiny_text_folder, pairs, data, "--test-split", "train")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    # all 6 images of the source split, not only the 3 selected ones
    assert "shares 6 of its 6 images with the source split the training pairs were made " \
           f"from ({data}, split train)" in err[0] and "--allow-test-overlap" in err[0]
    out = tmp_path / "r.json"
    rc = _evaluate(tmp_path, tiny_text_folder, pairs, data, "--test-split", "train",
                   "--allow-test-overlap", "--out", str(out))
    captured = capsys.readouterr()
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["test_overlap"]["images"] == 6 and r["test_overlap"]["allowed"] is True
    assert "WARNING: the test set" in captured.out and "OVERSTATE" in captured.out
    assert "TEST OVERLAP" in captured.err  # a warning even with -q
    # a plain training set: the same image files, or copies of their bytes, are caught too
    assert _evaluate(tmp_path, tiny_text_folder, data, data, "--test-split", "train") == 2
    assert "shares 6 of its 6 images with the training set" in capsys.readouterr().err


def test_empty_or_missing_split_is_one_line(karpathy_and_pairs, tmp_path, tiny_text_folder,
                                            capsys):
    data, pairs = karpathy_and_pairs
    assert _evaluate(tmp_path, tiny_text_folder, pairs, data, "--test-split", "dev") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no images in split 'dev' (splits present: test, train, val" in err[0]


def test_identical_evaluation_returns_cached_results(karpathy_and_pairs, tmp_path,
                                                     tiny_text_folder, capsys, monkeypatch):
    import gitd.evaluation.evaluate as E
    data, pairs = karpathy_and_pairs
    out = tmp_path / "r.json"
    assert _evaluate(tmp_path, tiny_text_folder, pairs, data, "--out", str(out)) == 0
    first = json.loads(out.read_text())
    capsys.readouterr()

    trained = []
    real = E._train_seed
    monkeypatch.setattr(E, "_train_seed", lambda *a, **k: trained.append(a[0]) or real(*a, **k))
    built = []
    real_build = E.build_image_encoder
    monkeypatch.setattr(E, "build_image_encoder",
                        lambda *a, **k: built.append(a) or real_build(*a, **k))

    # the same command: nothing built, nothing trained, the same figures, said so
    assert _evaluate(tmp_path, tiny_text_folder, pairs, data, "--out", str(out)) == 0
    assert trained == [] and built == []
    assert "(cached: evaluated before" in capsys.readouterr().out
    assert json.loads(out.read_text()) == first
    # without --out too, from the cache folder
    assert _evaluate(tmp_path, tiny_text_folder, pairs, data) == 0 and trained == []
    # the pairs rewritten with the same bytes (a re-run of select): still cached
    for p in (pairs / "images").iterdir():
        p.write_bytes(p.read_bytes())
    assert _evaluate(tmp_path, tiny_text_folder, pairs, data) == 0 and trained == []
    # any change recomputes: a setting, a caption, an image's bytes
    assert _evaluate(tmp_path, tiny_text_folder, pairs, data, "--lr", "0.002") == 0
    assert trained == [0]
    rows = json.loads((pairs / "annotations.json").read_text())
    rows[0]["caption"] += " (edited)"
    (pairs / "annotations.json").write_text(json.dumps(rows))
    assert _evaluate(tmp_path, tiny_text_folder, pairs, data) == 0 and trained == [0, 0]
    img = next((pairs / "images").iterdir())
    Image.new("RGB", (24, 24), (1, 2, 3)).save(img)
    assert _evaluate(tmp_path, tiny_text_folder, pairs, data) == 0 and trained == [0, 0, 0]
    # more seeds: only the new one trains
    assert _evaluate(tmp_path, tiny_text_folder, pairs, data, "--seeds", "2") == 0
    assert trained == [0, 0, 0, 1]
