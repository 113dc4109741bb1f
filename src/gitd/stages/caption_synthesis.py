"""Caption synthesis: N more captions per image from an image-text-to-text model (EDGE's step).

Each image keeps its own caption(s) first and gains ``extra_captions`` captions sampled from a
vision-language model (LLaVA-1.5-7B in the ``paper`` presets, prompted "Describe the image in
one sentence." as EDGE's LLaVA script does; ``tiny-llava``, a random-weight model of the same
class, in ``tiny``). Any ``AutoModelForImageTextToText`` checkpoint works (a processor with a
chat template gets the prompt as a user turn with the image).

It is one stage of per-image units (``StageCall.units``, ``gitd.plan``): each image's captions are written
atomically as soon as they exist and depend only on the image and its own seed, so a killed run
resumes where it stopped and ends as an uninterrupted one would. Every distillation method runs
it after its own stages (``--extra-captions N``, ``CaptionSynthesisFields``); ``gitd caption OUT
--extra N`` runs it on any gitd output (``caption_output``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from gitd.errors import GitdError
from gitd.log import get_logger
from gitd.models.offload import OffloadFields
from gitd.models.roles import ModelRef, Role, Runtime
from gitd.presets import register_presets
from gitd.settings import Interval, Text, setting, validate

log = get_logger("caption")

EDGE_PROMPT = "Describe the image in one sentence."
_POSITIVE = Interval(int, 1, None)
# The model role of this step: a captioner prompted with ``vlm_prompt``.
ROLE = Role("captioner", "vlm", "vlm_revision",
            source=lambda s: (s.vlm, s.vlm_revision, {"prompt": s.vlm_prompt}))


@dataclass(frozen=True)
class CaptionSynthesisFields:
    """The step's settings as a method declares them (a mixin of ``DistillSettings``)."""

    extra_captions: int = setting(0, Interval(int, 0, None), "captions added per image by a "
                                  "vision-language model, after the method's own (EDGE's caption "
                                  "synthesis; 0: none)", flags=("--extra-captions", "--extra"))
    vlm: str = setting("llava-hf/llava-1.5-7b-hf", Text(), "image-text-to-text model id or "
                       "folder that writes the extra captions (LLaVA, ...), or tiny-llava")
    vlm_revision: str | None = setting(None, Text(), "revision (commit/tag) of the "
                                       "vision-language model", optional=True, metavar="REV")
    vlm_prompt: str = setting(EDGE_PROMPT, Text(), "instruction sent with each image")
    # LLaVA's own command-line chat samples at temperature 0.2, which EDGE's script used.
    vlm_temperature: float = setting(0.2, Interval(float, 0, None, closed="right"),
                                     "sampling temperature of the extra captions (raise it for "
                                     "more varied captions when adding several)")
    vlm_top_p: float = setting(1.0, Interval(float, 0, 1, closed="right"),
                               "nucleus sampling top_p of the extra captions")
    vlm_max_new_tokens: int = setting(77, _POSITIVE, "longest extra caption, in tokens")
    vlm_batch_size: int = setting(8, _POSITIVE, "images per vision-language model call")

    def caption_synthesis_settings(self, runtime: Runtime) -> "CaptionSynthesisSettings":
        return CaptionSynthesisSettings(
            vlm=ROLE.ref(self), prompt=self.vlm_prompt, extra=self.extra_captions,
            temperature=self.vlm_temperature, top_p=self.vlm_top_p,
            max_new_tokens=self.vlm_max_new_tokens, batch_size=self.vlm_batch_size,
            seed=self.seed, dtype=runtime.dtype_name, device=runtime.device_type)


# Preset values of the fields, for the methods' presets and ``gitd caption``.
PAPER = {"vlm": "llava-hf/llava-1.5-7b-hf", "vlm_prompt": EDGE_PROMPT, "vlm_temperature": 0.2,
         "vlm_top_p": 1.0, "vlm_max_new_tokens": 77, "vlm_batch_size": 8}
TINY = {**PAPER, "vlm": "tiny-llava", "vlm_temperature": 0.7, "vlm_top_p": 0.9,
        "vlm_max_new_tokens": 8, "vlm_batch_size": 4}


@dataclass(frozen=True)
class CaptionSynthesisSettings:
    """Everything an image's extra captions depend on besides the image (the stage key)."""

    version: ClassVar[int] = 1  # bump when a change alters the captions this stage writes

    vlm: ModelRef
    prompt: str
    extra: int
    temperature: float
    top_p: float
    max_new_tokens: int
    # Images per model call: batch composition can change low-order bits.
    batch_size: int
    seed: int
    dtype: str
    device: str


def caption_synthesis_stage(call, images: Sequence) -> list[list[str]]:
    """Run (or finish) the stage (``call``: its ``gitd.plan.StageCall``, with model ``vlm``)
    over ``images`` (PIL images or paths), one unit per image; returns ``extra`` new captions
    per image."""
    from gitd.data.images import is_image_ref, open_rgb
    from gitd.store import atomic_write_json, derive_seed, read_json, unit_path

    st: CaptionSynthesisSettings = call.settings

    def compute(chunk: range) -> list:
        imgs = [open_rgb(images[j]) if is_image_ref(images[j]) else images[j] for j in chunk]
        seeds = [derive_seed(st.seed, "caption-synthesis", j) for j in chunk]
        caps = call.model("vlm").generate(imgs, num_captions=st.extra,
                                          temperature=st.temperature, top_p=st.top_p,
                                          max_new_tokens=st.max_new_tokens, seeds=seeds)
        return list(zip(seeds, caps))

    def write(stage, j: int, result) -> None:
        seed, caps = result
        atomic_write_json(unit_path(stage, j), {"captions": list(caps), "seed": seed})

    return call.units(len(images), st.batch_size, compute, write,
                      lambda stage, j: read_json(unit_path(stage, j))["captions"], noun="image")


def describe(fields: CaptionSynthesisFields, originals: list[list[str]],
             key: str | None) -> dict[str, Any]:
    """The manifest's ``caption_synthesis`` entry: the settings, the model, which captions of
    each image were there before (they come first), and the stage key."""
    from gitd.models import describe_model

    names = [f.name for f in dataclasses.fields(CaptionSynthesisFields)]
    return {**{n: getattr(fields, n) for n in names},
            "model": describe_model("captioner", fields.vlm, fields.vlm_revision),
            "original_captions": originals, "stage": key}


# -- gitd caption OUT --extra N ------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionCommandSettings(CaptionSynthesisFields, OffloadFields):
    """``gitd caption``'s settings: the step's fields plus the run's seed, device, dtype and
    offload."""

    extra_captions: int = setting(1, Interval(int, 1, None), "captions added per image",
                                  flags=("--extra", "--extra-captions"))
    seed: int = setting(0, Interval(int, 0, 2**32 - 1), "seed; an image's captions depend only "
                        "on it and the image")
    device: str = setting("auto", Text(), "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or "
                          "mps")
    dtype: str = setting("auto", Text(), "auto (float16 on CUDA, float32 elsewhere), float32, "
                         "float16 or bfloat16")


PRESETS = register_presets("caption", CaptionCommandSettings, {"paper": PAPER, "tiny": TINY},
                           default="paper", what="gitd caption",
                           notes={"paper": "llava-hf/llava-1.5-7b-hf",
                                  "tiny": "a random-weight LLaVA, offline"})


def command_settings(preset: str | None = None, **values: Any) -> CaptionCommandSettings:
    """``gitd caption``'s settings: defaults < ``preset`` (default paper) < ``values``."""
    return PRESETS.make(preset, **values)


def caption_output(src: str | Path, settings: CaptionCommandSettings, *,
                   dest: str | Path | None = None, vlm: Any = None,
                   on_unit: Callable[[str, int], None] | None = None) -> Path:
    """Add ``settings.extra_captions`` captions to every image of the gitd output ``src``,
    writing the result as a gitd output to ``dest`` (default: ``src`` itself). Each image keeps
    its original captions first; a second call with other settings starts again from those
    originals, so captions never pile up.

    The result replaces ``dest`` as a whole, as every writer's does (``gitd.outdir``): it is
    built beside it and swapped in, so an evaluation (``results.json``) or a report of the
    captions before goes with them instead of describing the new set. The work folder
    (``DEST/work``) is kept, so a killed run resumes per image."""
    from gitd.outdir import MARKER, Inputs, OutputFolder, read_marker
    from gitd.store import read_json

    validate(settings)
    src = Path(src)
    if src.is_file():
        src = src.parent
    dest = Path(dest) if dest is not None else src
    manifest = read_json(src / "manifest.json")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("items"), list):
        raise GitdError(f"{src}: not a gitd output (no manifest.json with items); gitd caption "
                        "adds captions to what gitd distill or gitd select wrote")
    in_place = dest.resolve() == src.resolve()
    if in_place and read_marker(src) is None:
        raise GitdError(f"{src}: has no {MARKER} marker, so gitd cannot tell its own files "
                        "from others and will not rewrite it in place; write the result "
                        "elsewhere with --out DEST")
    # In place, the output's own files are what is read, and they are replaced only after the
    # new result is whole; elsewhere, nothing of src may be written over.
    inputs = Inputs() if in_place else Inputs().folder(src, "input output folder")
    folder = OutputFolder.prepare(dest, command="caption", inputs=inputs, work=dest / "work")
    try:
        return _caption(src, dest, folder, manifest, settings, vlm, on_unit, in_place)
    except BaseException:
        OutputFolder.discard_unused(dest)
        raise


def _caption(src: Path, dest: Path, folder, manifest: dict, settings: CaptionCommandSettings,
             vlm: Any, on_unit, in_place: bool) -> Path:
    from gitd.data import load_dataset
    from gitd.data.output import OutputPair, write_output
    from gitd.models.roles import Models
    from gitd.plan import Plan, PlanRunner
    from gitd.store import atomic_copy, file_fingerprint, fingerprint

    runtime = Runtime.resolve(settings.device, settings.dtype, [settings.vlm])
    dataset = load_dataset(src)
    items = {item["image"]: (i, item) for i, item in enumerate(manifest["items"])}
    before = (manifest.get("caption_synthesis") or {}).get("original_captions")
    originals, infos, paths = [], [], []
    for rec in dataset.records:
        if rec.id not in items:
            raise GitdError(f"{src}: image {rec.id} is in annotations.json but not in "
                            "manifest.json; the output was edited by hand")
        i, item = items[rec.id]
        originals.append(list(before[i]) if before else list(rec.captions))
        infos.append({k: v for k, v in item.items() if k not in ("image", "caption")})
        paths.append(rec.image)
    plan = Plan()
    step = plan.add("caption_synthesis", settings.caption_synthesis_settings(runtime),
                    lambda call: caption_synthesis_stage(call, paths), roles={"vlm": "vlm"})
    models = Models({"vlm": ROLE}, settings, runtime.device, runtime.dtype,
                    {"vlm": vlm} if vlm is not None else None, offload=settings.offload)
    runner = PlanRunner(dest / "work", plan, fingerprint([file_fingerprint(p) for p in paths]),
                        models, on_unit=on_unit)
    extra = runner.run()[step]
    pairs = [OutputPair(image=p, captions=o + e, info=info)
             for p, o, e, info in zip(paths, originals, extra, infos)]
    keep = {k: v for k, v in manifest.items()
            if k not in ("items", "pairs", "created", "gitd_version", "versions")}
    entry = describe(settings, originals, runner.keys[step])
    keep["caption_synthesis"] = entry
    keep["untrained"] = bool(manifest.get("untrained")) or bool(entry["model"]["untrained"])
    stale = [n for n in ("results.json", "results", "report.html") if (dest / n).exists()]
    with folder.replace() as staging:
        write_output(staging, pairs, keep)
        if (src / "config.json").is_file():  # how the images were made (gitd distill's)
            atomic_copy(src / "config.json", staging / "config.json")
    if in_place and stale:
        log.warning("%s: removed %s with the captions they were computed on; re-run gitd "
                    "evaluate (and gitd report) for the new set", dest, ", ".join(stale))
    log.info("wrote %d images with %d + %d captions each to %s", len(pairs),
             len(originals[0]) if originals else 0, settings.extra_captions, dest)
    return dest
