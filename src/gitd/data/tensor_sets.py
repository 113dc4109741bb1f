"""Distilled sets that other methods save as tensors, read for ``gitd evaluate --train``.

* LoRS and RepBlend (silicx/LoRS_Distill @8a712af, distill_tesla_lors.py lines 234-241) save
  ``distilled_<iteration>.pt`` with ``torch.save`` of a dict: ``image`` [n, 3, H, W] float
  pixels normalised with CLIP's mean and std (their loaders' ``transforms.Normalize``),
  ``text`` [n, d] text-encoder embeddings (BERT-base CLS, 768-d, in their scripts),
  ``similarity_params`` (the generator's parameters, a list of tensors), ``similarity_mat``
  [n, n] (the learned soft targets), ``syn_lr_img`` and ``syn_lr_txt`` (0-d tensors, the learned
  learning rates).
* MTT-VL (princetonvisualai/multimodal_dataset_distillation @c696fd6, distill.py lines 292-296)
  saves two bare tensors with ``torch.save``: ``images_best.pt`` (the synthetic images, as
  above) and ``labels_best.pt`` (their text embeddings). Those lines are commented out in the
  released code; the layout is what they save.

Files are read with ``torch.load(weights_only=True)`` only: tensors and plain containers. A
file that needs anything more (a pickled object, a function to call) is refused in one line
before any of it runs. Nothing else in gitd unpickles user data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitd.errors import DataError

LORS_KEYS = ("image", "text", "similarity_params", "similarity_mat", "syn_lr_img", "syn_lr_txt")
TENSOR_SUFFIXES = (".pt", ".pth")
# Pixel statistics a file may declare (--train-normalisation); "none": pixels in [0, 1].
PIXEL_STATS = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
# Which text encoder writes embeddings of a width, for the one-line mismatch message.
TEXT_WIDTHS = {
    768: "bert-base-uncased's CLS embedding (the text encoder of LoRS, RepBlend and MTT-VL; "
         "--text-model bert-base-uncased)",
    512: "CLIP ViT-B/32's text embedding (LoRS's --text_encoder clip), which gitd's text "
         "encoders do not produce",
    384: "all-MiniLM-L6-v2's embedding (--text-model minilm)",
}


@dataclass
class TensorSet:
    """A distilled set held as tensors. ``pixels``: float [n, 3, H, W] on the 0-255 scale
    (converted from the declared normalisation, not rounded or clipped); ``text``: float
    [n, d]; ``similarity``: [n, n] or None; ``lr_image``/``lr_text``: learned rates or None."""

    source: Path
    files: list[Path]
    format: str  # "lors" or "mtt-vl"
    pixels: Any
    text: Any
    similarity: Any = None
    lr_image: float | None = None
    lr_text: float | None = None
    normalisation: str = "clip"
    keys: list[str] = field(default_factory=list)
    split: str | None = None  # sets that hold splits have them; these never do

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def n_captions(self) -> int:
        return len(self.text)

    def describe(self) -> dict[str, Any]:
        return {"format": self.format, "files": [str(f) for f in self.files],
                "keys": self.keys, "image_shape": list(self.pixels.shape[1:]),
                "text_dim": int(self.text.shape[1]), "normalisation": self.normalisation,
                "similarity_matrix": self.similarity is not None,
                "learned_lr": ({"image": self.lr_image, "text": self.lr_text}
                               if self.lr_image is not None or self.lr_text is not None
                               else None)}


def is_tensor_set(path: str | Path) -> bool:
    """Whether ``path`` names a tensor file or a folder of LoRS / MTT-VL files (and no
    annotation file, which a gitd output folder has)."""
    p = Path(path)
    if p.suffix.lower() in TENSOR_SUFFIXES:
        return True
    if not p.is_dir() or (p / "annotations.json").exists():
        return False
    return (p / "images_best.pt").is_file() or any(p.glob("distilled_*.pt"))


def safe_load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; anything else is one ``DataError``."""
    import pickle

    import torch

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        wanted = re.search(r"GLOBAL ([\w.]+)", text)
        if wanted is None:  # not a refusal: the bytes are no pickle the unpickler can read
            said = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            reason = said.group(1) if said else (text.strip().splitlines() or [""])[0]
            raise DataError(f"{path}: not a file written by torch.save ({reason[:120]})"
                            ) from None
        what = f" (it asks for {wanted.group(1)})"
        raise DataError(f"{path}: refused: loading it needs more than tensors and plain "
                        f"containers{what}; gitd reads distilled sets with torch.load("
                        "weights_only=True) and never runs code from a data file") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise DataError(f"{path}: not a file written by torch.save ({type(exc).__name__}"
                        f"{': ' + first if first else ''})") from None


def _partner(path: Path) -> tuple[Path, Path]:
    """(images file, labels file) of an MTT-VL pair named by either of them."""
    name = path.name
    if name.startswith("images"):
        return path, path.with_name("labels" + name[len("images"):])
    if name.startswith("labels"):
        return path.with_name("images" + name[len("labels"):]), path
    raise DataError(f"{path}: a tensor file on its own must be a LoRS / RepBlend dict "
                    f"({', '.join(LORS_KEYS[:2])}, ...); an MTT-VL set is a pair of files named "
                    "images_*.pt and labels_*.pt")


def _files(path: Path) -> tuple[str, list[Path]]:
    if path.is_dir():
        if (path / "images_best.pt").is_file():
            return "mtt-vl", [path / "images_best.pt", path / "labels_best.pt"]
        found = sorted(path.glob("distilled_*.pt"))
        if len(found) != 1:
            names = ", ".join(p.name for p in found[:5])
            raise DataError(f"{path}: holds {len(found)} LoRS files ({names}); name the one to "
                            "evaluate")
        return "lors", found
    return "", [path]


def _tensor(value: Any, name: str, path: Path, ndim: int):
    import torch

    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise DataError(f"{path}: {name} must be a {ndim}-D tensor, got {shape}")
    value = value.detach().float()
    if not torch.isfinite(value).all():
        raise DataError(f"{path}: {name} holds NaN or infinite values")
    return value


def _rate(value: Any, name: str, path: Path) -> float | None:
    import torch

    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{path}: {name} must be a number, got {type(value).__name__}")
    return float(value)


def load_tensor_set(path: str | Path, *, normalisation: str = "clip") -> TensorSet:
    """Read a LoRS / RepBlend ``distilled_N.pt`` or an MTT-VL ``images_*.pt`` +
    ``labels_*.pt`` pair (either file, or their folder); ``normalisation`` names the statistics
    the pixels were normalised with. Every problem is one ``DataError`` naming the file."""
    import torch

    path = Path(path)
    if normalisation not in PIXEL_STATS:
        raise DataError(f"train_normalisation must be one of {', '.join(PIXEL_STATS)}; got "
                        f"{normalisation!r}")
    kind, files = _files(path)
    first = safe_load(files[0])
    if kind == "mtt-vl" or (not kind and isinstance(first, torch.Tensor)):
        images_file, labels_file = files if kind else _partner(files[0])
        image = safe_load(images_file) if images_file != files[0] else first
        text = safe_load(labels_file) if labels_file != files[0] else first
        data, kind, files = {"image": image, "text": text}, "mtt-vl", [images_file, labels_file]
        names = {"image": images_file.name, "text": labels_file.name}
    elif isinstance(first, dict):
        data, kind, names = first, "lors", {"image": "'image'", "text": "'text'"}
        missing = [k for k in ("image", "text") if k not in data]
        if missing:
            raise DataError(f"{files[0]}: not a LoRS / RepBlend file: no {' or '.join(missing)} "
                            f"key (keys: {', '.join(map(str, data)) or 'none'})")
    else:
        raise DataError(f"{files[0]}: holds a {type(first).__name__}, not a LoRS / RepBlend dict "
                        "or an MTT-VL tensor")
    where = files[0]
    image = _tensor(data["image"], names["image"], where, 4)
    text = _tensor(data["text"], names["text"], where, 2)
    if image.shape[1] != 3:
        raise DataError(f"{where}: {names['image']} must be [n, 3, H, W] pixels, got "
                        f"{list(image.shape)}")
    if len(image) != len(text) or not len(image):
        raise DataError(f"{where}: {len(image)} images but {len(text)} text embeddings; they "
                        "must pair one to one")
    similarity = data.get("similarity_mat") if kind == "lors" else None
    if similarity is not None:
        similarity = _tensor(similarity, "'similarity_mat'", where, 2)
        if similarity.shape != (len(image), len(image)):
            raise DataError(f"{where}: 'similarity_mat' is {list(similarity.shape)}, expected "
                            f"[{len(image)}, {len(image)}]")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in PIXEL_STATS[normalisation])
    pixels = (image * std + mean) * 255.0
    return TensorSet(source=where, files=files, format=kind, pixels=pixels, text=text,
                     similarity=similarity,
                     lr_image=_rate(data.get("syn_lr_img"), "'syn_lr_img'", where),
                     lr_text=_rate(data.get("syn_lr_txt"), "'syn_lr_txt'", where),
                     normalisation=normalisation, keys=sorted(map(str, data)))


def text_width_problem(ts: TensorSet, encoder_name: str, encoder_dim: int) -> str | None:
    """The one line for text embeddings the text encoder's head cannot take, or None."""
    width = int(ts.text.shape[1])
    if width == encoder_dim:
        return None
    who = TEXT_WIDTHS.get(width, "the text encoder that wrote the file (pass it with "
                                 "--text-model)")
    return (f"{ts.source}: its text embeddings are {width}-d but the text encoder {encoder_name} "
            f"gives {encoder_dim}-d; {width}-d is {who}")
