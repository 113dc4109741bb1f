"""Caption synthesis: N more captions per image from an image-text-to-text model (EDGE's step).

Each image keeps its own caption(s) first and gains ``extra`` captions sampled from a vision
language model (LLaVA-1.5-7B in the ``paper`` preset, prompted "Describe the image in one
sentence." as EDGE's LLaVA script does; ``tiny-llava``, a random-weight model of the same class,
in ``tiny``). Any ``AutoModelForImageTextToText`` checkpoint works (a processor with a chat
template gets the prompt as a user turn with the image).

It is one stage of per-image units (``gitd.store.run_units``): each image's captions are written
atomically as soon as they exist and depend only on the image and its own seed, so a killed run
resumes where it stopped and ends as an uninterrupted one would. ``gitd caption OUT --extra N``
runs it on any gitd output; methods run it after their own stages (``--extra-captions N``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from gitd.errors import ConfigError
from gitd.store import Stage, atomic_write_json, fingerprint, read_json, run_units, unit_path

EDGE_PROMPT = "Describe the image in one sentence."


def _setting(default: Any, help: str, kind: type | None = None, low: float | None = None):
    return field(default=default, metadata={"help": help, "type": kind, "low": low})


@dataclass(frozen=True)
class CaptionSynthesisSettings:
    """The extra captions of each image: which model, how many, how they are sampled."""

    extra: int = _setting(1, "captions added per image (EDGE's cpi - 1)", int, 0)
    vlm: str = _setting("llava-hf/llava-1.5-7b-hf", "image-text-to-text model id or folder "
                                                     "(LLaVA, ...), or tiny-llava offline", str)
    vlm_revision: str | None = _setting(None, "revision (commit/tag) of the model", str)
    prompt: str = _setting(EDGE_PROMPT, "instruction given with each image", str)
    # LLaVA's own command-line chat samples at temperature 0.2, which EDGE's script used.
    temperature: float = _setting(0.2, "sampling temperature (raise it for more varied captions "
                                       "when adding several)", float, 0.0)
    top_p: float = _setting(1.0, "nucleus sampling top_p", float, 0.0)
    max_new_tokens: int = _setting(77, "longest caption, in tokens", int, 1)
    batch_size: int = _setting(8, "images per model call", int, 1)
    seed: int = _setting(0, "seed; an image's captions depend only on it and the image", int, 0)
    dtype: str = _setting("auto", "auto (float16 on CUDA, float32 elsewhere), float32, float16 "
                                  "or bfloat16", str)
    device: str = _setting("auto", "auto, cpu, cuda, cuda:N or mps", str)

    def validate(self) -> "CaptionSynthesisSettings":
        from gitd.config import _int, _number, _string

        _int("extra", self.extra, 0)
        for name in ("max_new_tokens", "batch_size"):
            _int(name, getattr(self, name), 1)
        _int("seed", self.seed, 0)
        _number("temperature", self.temperature, 0.0, float("inf"), low_open=True)
        _number("top_p", self.top_p, 0.0, 1.0, low_open=True)
        for name in ("vlm", "prompt", "dtype", "device"):
            _string(name, getattr(self, name))
        if self.vlm_revision is not None:
            _string("vlm_revision", self.vlm_revision)
        return self

    def replace(self, **changes: Any) -> "CaptionSynthesisSettings":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown caption synthesis setting(s) {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"vlm": "llava-hf/llava-1.5-7b-hf", "prompt": EDGE_PROMPT, "temperature": 0.2,
              "top_p": 1.0, "max_new_tokens": 77, "batch_size": 8},
    "tiny": {"vlm": "tiny-llava", "prompt": EDGE_PROMPT, "temperature": 0.7, "top_p": 0.9,
             "max_new_tokens": 8, "batch_size": 4},
}


def settings_for(preset: str = "paper", **values: Any) -> CaptionSynthesisSettings:
    if preset not in PRESETS:
        raise ConfigError(f"unknown caption preset {preset!r}; choose one of: "
                          f"{', '.join(PRESETS)}")
    return CaptionSynthesisSettings(**{**PRESETS[preset], **values})


def synthesize_captions(work: str | Path, settings: CaptionSynthesisSettings,
                        images: Sequence, upstream: str, get_vlm: Callable[[], Any], *,
                        name: str = "caption-synthesis",
                        on_unit: Callable[[str, int], None] | None = None
                        ) -> tuple[list[list[str]], Stage]:
    """``settings.extra`` new captions for each of ``images`` (PIL images or paths), finished
    per image in ``work/<name>-<key>/``; the key holds every setting and ``upstream`` (the
    fingerprint of what the images are). Returns the captions per image and the stage."""
    from gitd.data.images import open_rgb
    from gitd.stages.generate import candidate_seed

    settings.validate()
    if settings.extra < 1:
        raise ConfigError("extra must be >= 1 to synthesise captions")
    stage = Stage.open(work, name, {**dataclasses.asdict(settings), "upstream": upstream})
    vlm: list[Any] = []

    def compute(chunk: range) -> list:
        if not vlm:
            vlm.append(get_vlm())
        imgs = [open_rgb(images[j]) if isinstance(images[j], (str, Path)) else images[j]
                for j in chunk]
        seeds = [candidate_seed(settings.seed, j) for j in chunk]
        caps = vlm[0].generate(imgs, num_captions=settings.extra,
                               temperature=settings.temperature, top_p=settings.top_p,
                               max_new_tokens=settings.max_new_tokens, seeds=seeds)
        return list(zip(seeds, caps))

    def write(j: int, result) -> None:
        seed, caps = result
        atomic_write_json(unit_path(stage, j), {"captions": list(caps), "seed": seed})

    run_units(stage, len(images), settings.batch_size, compute, write, noun="image",
              on_written=(lambda j: on_unit(name, j)) if on_unit else None)
    stage.mark_done({"images": len(images)})
    return [read_json(unit_path(stage, j))["captions"] for j in range(len(images))], stage


def images_fingerprint(paths: Sequence[str | Path]) -> str:
    """What a set of image files is, for the key of a stage that reads them."""
    from gitd.store import file_fingerprint

    return fingerprint([file_fingerprint(p) for p in paths])




def build_vlm(settings: CaptionSynthesisSettings):
    """The captioner of ``settings`` from the model registry, prompted with its prompt."""
    from gitd.models import build_captioner, resolve_device, resolve_dtype

    device = resolve_device(settings.device)
    return build_captioner(settings.vlm, device=device,
                           dtype=resolve_dtype(settings.dtype, device), seed=settings.seed,
                           revision=settings.vlm_revision, prompt=settings.prompt)


def describe(settings: CaptionSynthesisSettings, originals: list[list[str]],
             stage: Stage) -> dict[str, Any]:
    """The manifest's ``caption_synthesis`` entry: the settings, the model, which captions of
    each image were there before (they come first), and the stage key."""
    from gitd.models import describe_model

    return {**dataclasses.asdict(settings),
            "model": describe_model("captioner", settings.vlm, settings.vlm_revision),
            "original_captions": originals, "stage": stage.key}


def caption_output(src: str | Path, settings: CaptionSynthesisSettings, *,
                   dest: str | Path | None = None, vlm: Any = None,
                   on_unit: Callable[[str, int], None] | None = None) -> Path:
    """Add ``settings.extra`` captions to every image of the gitd output ``src``, writing the
    result as a gitd output to ``dest`` (default: ``src`` itself, rewritten atomically file by
    file). Each image keeps its original captions first; a second call with other settings
    starts again from those originals, so captions never pile up."""
    from gitd.data import load_dataset
    from gitd.data.output import OutputPair, write_output
    from gitd.errors import GitdError
    from gitd.log import get_logger

    log = get_logger("caption")
    settings.validate()
    src = Path(src)
    if src.is_file():
        src = src.parent
    dest = Path(dest) if dest is not None else src
    manifest = read_json(src / "manifest.json")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("items"), list):
        raise GitdError(f"{src}: not a gitd output (no manifest.json with items); gitd caption "
                        "adds captions to what gitd distill or gitd select wrote")
    if dest.resolve() != src.resolve():
        a, b = dest.resolve(), src.resolve()
        if a in b.parents or b in a.parents:
            raise ConfigError(f"--out {dest} overlaps the input {src}; write elsewhere or "
                              "leave --out out to rewrite the input in place")
        if dest.exists() and any(dest.iterdir()) and not (dest / "manifest.json").is_file():
            raise ConfigError(f"--out {dest} is a non-empty folder that is not a gitd output")
    dataset = load_dataset(src)
    items = {item["image"]: (i, item) for i, item in enumerate(manifest["items"])}
    previous = manifest.get("caption_synthesis") or {}
    originals, infos, paths = [], [], []
    for rec in dataset.records:
        if rec.id not in items:
            raise GitdError(f"{src}: image {rec.id} is in annotations.json but not in "
                            "manifest.json; the output was edited by hand")
        i, item = items[rec.id]
        before = previous.get("original_captions")
        originals.append(list(before[i]) if before else list(rec.captions))
        infos.append({k: v for k, v in item.items() if k not in ("image", "caption")})
        paths.append(rec.image)
    extra, stage = synthesize_captions(
        dest / "work", settings, paths, images_fingerprint(paths),
        (lambda: vlm) if vlm is not None else (lambda: build_vlm(settings)), on_unit=on_unit)
    pairs = [OutputPair(image=p, captions=o + e, info=info)
             for p, o, e, info in zip(paths, originals, extra, infos)]
    keep = {k: v for k, v in manifest.items()
            if k not in ("items", "pairs", "created", "gitd_version", "versions")}
    entry = describe(settings, originals, stage)
    keep["caption_synthesis"] = entry
    keep["untrained"] = bool(manifest.get("untrained")) or bool(entry["model"]["untrained"])
    if dest.resolve() == src.resolve() and (src / "results.json").exists():
        log.warning("%s: results.json was computed with the captions before this step; re-run "
                    "gitd evaluate", src)
    write_output(dest, pairs, keep)
    log.info("wrote %d images with %d + %d captions each to %s", len(pairs),
             len(originals[0]) if originals else 0, settings.extra, dest)
    return dest


__all__ = ["CaptionSynthesisSettings", "EDGE_PROMPT", "PRESETS", "build_vlm", "caption_output",
           "describe", "images_fingerprint", "settings_for", "synthesize_captions"]
