"""Which files of a model repository gitd's loaders read: one rule for ``gitd fetch``, online
loads and the offline "is it on disk" check.

A :class:`Layout` names the exact root files a loader opens (a pipeline's ``model_index.json``,
a timm checkpoint) and the *component folders* it loads from (``""`` is the repository root):
from each, the small files the libraries read (configs, tokenizer and processor files) and one
set of weights, safetensors only:

* the fp16 variant (``*.fp16.safetensors``, ``*.fp16-0000i-of-0000n.safetensors``) where the
  folder has one and fp16 is wanted (what a CUDA run loads), else the full-precision files;
* a folder with no safetensors at all falls back to its PyTorch ``*.bin`` weights, and says so
  (transformers reads them with ``torch.load(weights_only=True)``).

Everything else is left on the hub: other formats (``.bin`` beside safetensors, ``.ckpt``,
Flax, TF, ONNX), single-file checkpoints at a pipeline's root (``v1-5-pruned.safetensors``),
folders the pipeline does not load (a safety checker), READMEs and images.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

# Small files the libraries read from a component folder (configs, tokenizers, processors,
# chat templates).
AUX_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")
WEIGHT_PREFIXES = ("diffusion_pytorch_model", "model", "pytorch_model")
_SHARD = r"-\d{5}-of-\d{5}"
_PREFIX = "(?:" + "|".join(WEIGHT_PREFIXES) + ")"
_FULL = re.compile(rf"^{_PREFIX}(?:{_SHARD})?\.(safetensors)$")
_FP16 = re.compile(rf"^{_PREFIX}(?:\.fp16(?:{_SHARD})?|{_SHARD}\.fp16)\.safetensors$")
_FULL_INDEX = re.compile(rf"^{_PREFIX}\.safetensors\.index\.json$")
_FP16_INDEX = re.compile(rf"^{_PREFIX}\.safetensors\.index\.fp16\.json$")
_BIN = re.compile(rf"^{_PREFIX}(?:{_SHARD})?\.bin$")
_BIN_INDEX = re.compile(rf"^{_PREFIX}\.bin\.index\.json$")
# Any weight-like file: never fetched as an "aux" file, whatever its name.
_WEIGHTS = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx",
            ".onnx_data", ".pb", ".ot", ".gguf", ".mlmodel", ".tflite")


@dataclass(frozen=True)
class Layout:
    """What a loader reads from a repository (see the module doc). ``diffusers``: the loader
    takes ``variant=`` (diffusers models and pipelines), so fp16 variant files are loadable."""

    files: tuple[str, ...] = ()
    folders: tuple[str, ...] = ("",)
    diffusers: bool = False

    def __or__(self, other: "Layout") -> "Layout":
        return Layout(tuple(dict.fromkeys(self.files + other.files)),
                      tuple(dict.fromkeys(self.folders + other.folders)),
                      self.diffusers or other.diffusers)

    def patterns(self, fp16: bool) -> list[str]:
        """The layout as glob patterns, for ``gitd fetch --dry-run`` (no network)."""
        out = list(self.files)
        if not self.folders:
            return out
        named = [f for f in self.folders if f]
        where = (("{" + ",".join(named) + "}/" if len(named) > 1 else f"{named[0]}/")
                 if named else "")
        if named and "" in self.folders:
            out += self.__class__(folders=("",), diffusers=self.diffusers).patterns(fp16)
        aux = ",".join(s.lstrip(".") for s in AUX_SUFFIXES)
        out.append(f"{where}*.{{{aux}}}")
        if fp16 and self.diffusers:
            out.append(f"{where}*.fp16.safetensors  (the fp16 variant where the repo has one, "
                       "else *.safetensors; *.bin only where there are no safetensors)")
        else:
            out.append(f"{where}*.safetensors  (without a variant; *.bin only where there are "
                       "no safetensors)")
        return out


TRANSFORMERS = Layout()


def subfolder(name: str) -> Layout:
    """A diffusers model stored in one folder of a repository (a pipeline's ``vae/``)."""
    return Layout(folders=(name,), diffusers=True)


def pipeline(pipeline_class, skip: Iterable[str] = ()) -> Layout:
    """A diffusers pipeline: ``model_index.json`` and the folders of its components (from the
    class's signature, the way diffusers finds them), less ``skip`` (components gitd passes
    itself, such as ``safety_checker=None``)."""
    from diffusers import DiffusionPipeline

    expected, _ = DiffusionPipeline._get_signature_keys(pipeline_class)
    folders = tuple(sorted(set(expected) - set(skip)))
    return Layout(files=("model_index.json",), folders=folders, diffusers=True)


def single_file(name: str) -> Layout:
    """One file at the repository root (a timm checkpoint)."""
    return Layout(files=(name,), folders=())


def _in_folder(path: str, folder: str) -> str | None:
    """``path``'s file name when it lies directly in ``folder`` (``""``: the root), else None."""
    head, _, name = path.rpartition("/")
    return name if head == folder else None


def is_weight_file(name: str) -> bool:
    return name.endswith(_WEIGHTS)


def select_files(listing: Mapping[str, int | None], layout: Layout, *, fp16: bool,
                 pipeline_components: Iterable[str] | None = None
                 ) -> tuple[list[str], list[str]]:
    """(files to fetch, notes) from a repository's file listing (path -> size).

    ``pipeline_components``: the folders ``model_index.json`` lists with a class (a pipeline
    repository need not have every component its class can take)."""
    wanted: list[str] = [f for f in layout.files if f in listing]
    notes: list[str] = [f"{f} is not in the repository" for f in layout.files
                        if f not in listing]
    folders = layout.folders
    if pipeline_components is not None:
        folders = tuple(f for f in folders if f in set(pipeline_components))
    for folder in folders:
        names = {n: p for p in listing if (n := _in_folder(p, folder)) is not None}
        wanted += [p for n, p in names.items() if n.endswith(AUX_SUFFIXES)
                   and not is_weight_file(n) and not _BIN_INDEX.match(n)
                   and not _FULL_INDEX.match(n) and not _FP16_INDEX.match(n)]
        full = [p for n, p in names.items() if _FULL.match(n) or _FULL_INDEX.match(n)]
        half = [p for n, p in names.items() if _FP16.match(n) or _FP16_INDEX.match(n)]
        if not layout.diffusers:
            half = []  # transformers' own loaders take no variant: only the plain names load
        if half and (fp16 or not full):
            wanted += half
            if not fp16:
                notes.append(f"{folder or 'the root'}: only fp16 weights; they are loaded and "
                             "cast to the run's dtype")
        elif full:
            wanted += full
        else:
            bins = [p for n, p in names.items() if _BIN.match(n) or _BIN_INDEX.match(n)]
            if bins:
                wanted += bins
                notes.append(f"{folder or 'the root'}: no safetensors weights, fetching the "
                             "PyTorch .bin ones (read with torch.load(weights_only=True))")
    return sorted(dict.fromkeys(wanted)), notes


def pipeline_components(model_index: Mapping) -> list[str]:
    """Component folders a ``model_index.json`` lists with a class (``[null, null]``: none)."""
    return [k for k, v in model_index.items() if not k.startswith("_")
            and isinstance(v, (list, tuple)) and len(v) == 2 and v[1] is not None]


def local_listing(folder: Path) -> dict[str, int]:
    """path -> size of every file under ``folder`` (a snapshot or a saved model)."""
    out = {}
    for p in folder.rglob("*"):
        if p.is_file():
            out[p.relative_to(folder).as_posix()] = p.stat().st_size
    return out


def read_model_index(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def missing_files(folder: Path, layout: Layout) -> list[str]:
    """What a loader following ``layout`` would miss in ``folder`` (empty: complete enough to
    try): the exact files, and in each component folder a config and, for a model, weights."""
    missing = [f for f in layout.files if not (folder / f).is_file()]
    index = read_model_index(folder) if "model_index.json" in layout.files else None
    folders = layout.folders
    if index is not None:
        folders = tuple(f for f in folders if f in set(pipeline_components(index)))
    for name in folders:
        sub = folder / name if name else folder
        if not sub.is_dir() or not any(p.is_file() for p in sub.iterdir()):
            missing.append(f"{name}/" if name else "its files")
            continue
        if (sub / "config.json").is_file() and not any(
                _FULL.match(p.name) or _FP16.match(p.name) or _BIN.match(p.name)
                for p in sub.iterdir()):
            missing.append(f"{name + '/' if name else ''}weights")
    return missing


def has_fp16(folder: Path, layout: Layout) -> tuple[bool, bool]:
    """(fp16 variant weights present, full-precision weights present) over ``layout``'s
    folders of ``folder``."""
    half = full = False
    for name in layout.folders:
        sub = folder / name if name else folder
        if not sub.is_dir():
            continue
        for p in sub.iterdir():
            half = half or bool(_FP16.match(p.name))
            full = full or bool(_FULL.match(p.name) or _BIN.match(p.name))
    return half, full

