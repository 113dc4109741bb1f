"""Other methods' distilled tensor files as `gitd evaluate --train` (issue 21, item 1).

The files are written here the way the released code writes them (a "held-out script": the
keys and the torch.save call of silicx/LoRS_Distill's distill_tesla_lors.py, the two files of
MTT-VL's distill.py, pixels through LoRS's transform_test), holding the same pairs as an
annotation file; gitd's reader is not used to write them.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gitd.cli import main
from gitd.errors import ConfigError, DataError
from gitd.evaluation.evaluate import evaluate
from gitd.data.tensor_sets import load_tensor_set

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TINY = dict(image_model="timm:resnet10t", pretrained=False, image_size=32, batch_size=4,
            lr=1e-3, workers=0)


def _pairs(annotation):
    rows = json.loads(annotation.read_text())
    return ([annotation.parent / r["image"] for r in rows],
            [r["caption"][0] if isinstance(r["caption"], list) else r["caption"] for r in rows])


def _lors_tensors(annotation, text_model, size, mean=CLIP_MEAN, std=CLIP_STD):
    """LoRS's transform_test (Resize((s, s), bicubic), ToTensor, Normalize) and the text
    encoder's embeddings of the same captions."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    from gitd.models.encoders import build_text_encoder

    paths, captions = _pairs(annotation)
    transform = transforms.Compose([
        transforms.Resize((size, size), interpolation=InterpolationMode.BICUBIC),
        transforms.ToTensor(), transforms.Normalize(mean, std)])
    image = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    text = torch.from_numpy(build_text_encoder(text_model).encode(captions))
    return image, text


def write_lors_file(folder, annotation, text_model, *, size=32, iteration=0, sim_mat=None,
                    lr_img=0.1, lr_txt=0.1, **stats):
    """What distill_tesla_lors.py saves at an iteration: the low-rank similarity generator at
    its initialisation (diag ones, left random, right zeros) gives the identity matrix."""
    image, text = _lors_tensors(annotation, text_model, size, **stats)
    n, rank = len(image), 10
    a, left, right = torch.ones(n), torch.randn(n, rank), torch.zeros(n, rank)
    sim = torch.diag(a) + left @ right.t() * 3.0 / rank if sim_mat is None else sim_mat
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"distilled_{iteration}.pt"
    torch.save({"image": image, "text": text, "similarity_params": [a, left, right],
                "similarity_mat": sim, "syn_lr_img": torch.tensor(lr_img),
                "syn_lr_txt": torch.tensor(lr_txt)}, path)
    return path


def write_mtt_vl_files(folder, annotation, text_model, *, size=32):
    image, text = _lors_tensors(annotation, text_model, size)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(image, folder / "images_best.pt")
    torch.save(text, folder / "labels_best.pt")
    return folder / "images_best.pt"


def _close(a, b, tol=0.5):
    return all(abs(a[k]["mean"] - b[k]["mean"]) <= tol for k in a)


def test_lors_file_evaluates_as_its_annotation_file(tiny_sets, tiny_text, tmp_path):
    train, test = tiny_sets
    lors = write_lors_file(tmp_path / "lors", train, tiny_text)
    kw = dict(protocol="lors", epochs=3, seeds=2, text_model=tiny_text, cache=tmp_path / "c",
              **TINY)
    plain = evaluate(train, test, **kw)
    tensors = evaluate(lors, test, **kw)
    assert _close(plain["summary"], tensors["summary"]), (plain["summary"], tensors["summary"])
    for a, b in zip(plain["seeds"], tensors["seeds"]):  # the same inputs trained the same way
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert tensors["sets"]["train"]["format"] == "lors"
    assert tensors["sets"]["train"]["tensors"]["keys"] == sorted(
        ["image", "text", "similarity_params", "similarity_mat", "syn_lr_img", "syn_lr_txt"])
    used = tensors["train_tensors"]
    assert used["similarity_used"] and not used["learned_lr_used"]
    assert any("stand in for the text encoder" in note for note in used["notes"])
    assert tensors["config"]["protocol"]["image_lr"] is None  # the protocol's, without the flag
    assert tensors["test_overlap"]["not_checked"]


def test_mtt_vl_pair_evaluates_as_its_annotation_file(tiny_sets, tiny_text, tmp_path):
    train, test = tiny_sets
    images = write_mtt_vl_files(tmp_path / "mtt", train, tiny_text)
    kw = dict(epochs=3, seeds=2, text_model=tiny_text, cache=tmp_path / "c", **TINY)
    plain = evaluate(train, test, **kw)
    by_file = evaluate(images, test, **kw)
    assert _close(plain["summary"], by_file["summary"]), (plain["summary"], by_file["summary"])
    for a, b in zip(plain["seeds"], by_file["seeds"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    # the labels file, or the folder, names the same pair
    by_folder = evaluate(tmp_path / "mtt", test, **kw)
    assert by_folder["summary"] == by_file["summary"] and by_folder["from_cache"]
    assert by_file["sets"]["train"]["format"] == "mtt-vl"
    assert by_file["seeds"][0]["loss"] == "infonce"


def test_pixels_are_converted_from_the_declared_normalisation(tiny_sets, tiny_text, tmp_path):
    train, _ = tiny_sets
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    clip_file = write_lors_file(tmp_path / "a", train, tiny_text)
    in_file = write_lors_file(tmp_path / "b", train, tiny_text, mean=imagenet[0], std=imagenet[1])
    expected = load_tensor_set(clip_file).pixels
    assert torch.allclose(load_tensor_set(in_file, normalisation="imagenet").pixels, expected,
                          atol=1e-3)
    assert not torch.allclose(load_tensor_set(in_file).pixels, expected, atol=1)
    paths, _ = _pairs(train)
    first = torch.from_numpy(np.array(
        Image.open(paths[0]).convert("RGB").resize((32, 32), Image.BICUBIC))).permute(2, 0, 1)
    assert torch.allclose(expected[0], first.float(), atol=1e-3)  # the 0-255 pixels themselves


def test_learned_similarity_and_rates_are_used_and_recorded(tiny_sets, tiny_text, tmp_path):
    train, test = tiny_sets
    torch.manual_seed(0)
    soft = torch.eye(8) * 0.8 + torch.rand(8, 8) * 0.2
    path = write_lors_file(tmp_path / "lors", train, tiny_text, sim_mat=soft, lr_img=0.003,
                           lr_txt=0.002)
    kw = dict(epochs=1, seeds=1, text_model=tiny_text, cache=tmp_path / "c", **TINY)
    used = evaluate(path, test, **kw, train_learned_lr=True)
    assert used["seeds"][0]["loss"] == "wbce"  # LoRS's loss on the learned matrix
    assert (used["config"]["protocol"]["image_lr"], used["config"]["protocol"]["text_lr"]) == (
        pytest.approx(0.003), pytest.approx(0.002))
    assert used["train_tensors"]["learned_lr_used"] and used["train_tensors"]["similarity_used"]
    ignored = evaluate(path, test, **kw, train_similarity="ignore")
    assert ignored["seeds"][0]["loss"] == "infonce" and not ignored["train_tensors"][
        "similarity_used"]
    assert ignored["cache_key"] != used["cache_key"]
    # an MTT-VL pair has no learned rates to use
    mtt = write_mtt_vl_files(tmp_path / "mtt", train, tiny_text)
    with pytest.raises(ConfigError, match="holds no learned learning rates"):
        evaluate(mtt, test, **kw, train_learned_lr=True)


def test_a_text_width_that_does_not_fit_is_one_line(tiny_sets, tiny_text, tmp_path, capsys):
    train, test = tiny_sets
    path = write_lors_file(tmp_path / "lors", train, tiny_text)
    data = torch.load(path, weights_only=True)
    data["text"] = torch.randn(8, 768)
    torch.save(data, path)
    rc = main(["evaluate", "--train", str(path), "--test", str(test), "--text-model", tiny_text,
               "--image-model", "timm:resnet10t", "--no-pretrained", "--image-size", "32",
               "--epochs", "1", "--seeds", "1", "--cache", str(tmp_path / "c"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "its text embeddings are 768-d but the text encoder" in err[0] and "32-d" in err[0]
    assert "--text-model bert-base-uncased" in err[0]


class _WritesAFile:
    """Unpickling this calls open(MARKER, "w"): code running from a data file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_file_whose_pickle_would_run_code_is_refused(tiny_sets, tmp_path, capsys):
    _, test = tiny_sets
    marker = tmp_path / "code-ran"
    evil = tmp_path / "distilled_7.pt"
    torch.save({"image": torch.zeros(2, 3, 32, 32), "text": torch.zeros(2, 32),
                "similarity_mat": _WritesAFile(marker)}, evil)
    assert not marker.exists()  # saving did not run it
    rc = main(["evaluate", "--train", str(evil), "--test", str(test), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert f"{evil}: refused" in err[0] and "weights_only=True" in err[0]
    assert not marker.exists() and not any("Traceback" in line for line in err)


def test_a_tensor_file_cannot_be_the_test_set(tiny_sets, tiny_text, tmp_path):
    train, _ = tiny_sets
    path = write_lors_file(tmp_path / "lors", train, tiny_text)
    with pytest.raises(DataError, match="can only be the training set"):
        evaluate(train, path, text_model=tiny_text, **TINY)
