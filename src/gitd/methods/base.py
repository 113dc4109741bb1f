"""What every distillation method shares: its common settings and the run around its stages.

A distillation method subclasses :class:`DistillMethod`, declares ``Settings`` (a subclass of
:class:`DistillSettings`), ``presets``, ``roles`` and ``stages(settings, runtime)``, and
implements ``distill(dataset)``, which runs its stages through ``self.runner`` (a
``gitd.store.StageRunner``) with models from ``self.models`` (``gitd.models.roles.Models``) and
returns the output pairs plus the method's own manifest entries. Loading the data, the device,
the work folder, the output folder's safety (``gitd.outdir``), timings, the manifest and
``config.json`` are done here, once for all methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gitd.data import Dataset
from gitd.data.formats import dataset_fingerprint, load_dataset, note_input_change
from gitd.data.output import OutputPair, source_block, write_output
from gitd.errors import ConfigError, GitdError
from gitd.log import get_logger
from gitd.models.roles import Models, Runtime, describe_roles, untrained
from gitd.outdir import Inputs, OutputFolder
from gitd.registry import MAX_PAIRS, Method, MethodSettings
from gitd.settings import Interval, Options, PathText, Text, setting
from gitd.stages.caption_synthesis import (ROLE as VLM_ROLE, CaptionSynthesisFields,
                                           caption_synthesis_stage, describe)
from gitd.store import StagePlan, StageRunner, atomic_write_json, read_json

log = get_logger("methods")

DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class DistillSettings(CaptionSynthesisFields, MethodSettings):
    """What every distillation method has besides ``MethodSettings``: the output size, the
    dtype, the work folder, and the optional caption synthesis after the method's own stages
    (``--extra-captions N``)."""

    preset: str | None = setting(None, Text(), "the preset these settings started from",
                                 optional=True, affects_results=False, cli=False)
    pairs: int = setting(100, Interval(int, 1, MAX_PAIRS), "number of pairs to produce",
                        cli=False)
    dtype: str = setting("auto", Options(*DTYPES), "auto (float16 on CUDA, float32 "
                         "elsewhere), float32, float16 or bfloat16")
    work: str | None = setting(None, PathText(), "work folder of cached stages (default OUT/work); "
                               "where results are kept, not what they are",
                               optional=True, affects_results=False)


class DistillMethod(Method):
    """Base of ``gitd distill`` methods (see the module docstring)."""

    Settings = DistillSettings
    default_preset = "paper"

    @classmethod
    def with_caption_synthesis(cls, plan: dict[str, StagePlan], s: DistillSettings,
                               rt: Runtime) -> dict[str, StagePlan]:
        """``plan`` plus the caption synthesis stage when ``s.extra_captions`` asks for it, after
        the plan's last stage (every method's ``stages`` ends with this)."""
        if s.extra_captions:
            plan["caption_synthesis"] = StagePlan(s.caption_synthesis_settings(rt),
                                                  upstream=next(reversed(plan), "data"))
        return plan

    @property
    def all_roles(self) -> dict[str, Any]:
        return {**self.roles, "vlm": VLM_ROLE}

    def run(self, data: str | Path, out: str | Path, *, images: str | Path | None = None,
            split: str = "train", strict: bool = False, allow_outside_root: bool = False,
            work: str | Path | None = None, config_file: str | Path | None = None,
            on_unit: Callable[[str, int], None] | None = None) -> Path:
        """Distil ``data`` into ``settings.pairs`` pairs written to ``out``; returns ``out``.

        ``out`` (and ``work``) may not overlap the dataset or ``config_file``, and ``out`` is
        replaced as a whole (``gitd.outdir``); a run that fails before doing any work leaves
        nothing behind. ``on_unit(stage, index)`` is called after each finished unit is written
        (tests use it to interrupt a run at a known point)."""
        try:
            return self._run(data, Path(out), images=images, split=split, strict=strict,
                             allow_outside_root=allow_outside_root, work=work,
                             config_file=config_file, on_unit=on_unit)
        except BaseException:
            OutputFolder.discard_unused(out)
            raise

    def _run(self, data, out: Path, *, images, split, strict, allow_outside_root, work,
             config_file, on_unit) -> Path:
        s = type(self).validate(self.settings)
        work = work if work is not None else s.work
        work = Path(work if work is not None else out / "work")
        t0 = time.perf_counter()
        dataset = load_dataset(data, images, split=split, strict=strict,
                               allow_outside_root=allow_outside_root)
        if len(dataset) == 0:
            raise GitdError(f"{data}: no valid image-caption pairs to distil "
                            f"({len(dataset.problems)} rows skipped; run 'gitd check {data}')")
        if s.pairs > len(dataset):
            raise ConfigError(f"asked for {s.pairs} pairs but {data} has only "
                              f"{len(dataset)} valid images")
        if dataset.problems:
            log.warning("%d input problems; those rows are skipped (listed in the manifest; "
                        "run 'gitd check' for details, or --strict to stop on them)",
                        len(dataset.problems))
        folder = OutputFolder.prepare(out, command="distill", work=work, inputs=Inputs().dataset(
            dataset).file(config_file, "config file"))
        runtime = Runtime.resolve(s.device, s.dtype, [
            spec.ref(s).name for spec in self.all_roles.values() if spec.is_used(s)])
        self.runtime = runtime
        self.models = Models(self.all_roles, s, runtime.device, runtime.dtype, self.given_models)
        data_key = dataset_fingerprint(dataset)
        note_input_change(work, dataset, data_key)
        self.runner = StageRunner(work, self.stages(s, runtime), data_key, on_unit=on_unit)
        self.runner.timings["load"] = round(time.perf_counter() - t0, 3)
        pairs, extra = self.distill(dataset)
        if "caption_synthesis" in self.runner.plan:
            pairs, extra["caption_synthesis"] = self._synthesize_captions(pairs)
        models = describe_roles(self.all_roles, s)
        manifest = {
            "method": self.name, "kind": self.kind, "preset": s.preset, "seed": s.seed,
            "config": s.to_dict(),
            "models": models, "untrained": untrained(models),
            **{k: v for k, v in extra.items() if k not in ("n_valid", "problems")},
            "source": source_block(dataset, n_valid=extra.get("n_valid")),
            "work": str(work.resolve()), "stages": self.runner.stage_keys,
            "skipped": [p.to_dict() for p in dataset.problems + list(extra.get("problems", []))],
            "timings": self.runner.timings, "device": str(runtime.device),
            "dtype": runtime.dtype_name.removeprefix("torch."),
        }
        t_out = time.perf_counter()
        with folder.replace() as staging:
            write_output(staging, pairs, manifest)
            # The settings alone, loadable with `gitd distill --config OUT/config.json`.
            atomic_write_json(staging / "config.json", s.to_dict())
            self.runner.timings["output"] = round(time.perf_counter() - t_out, 3)
            # Written once more so that it carries the output stage's own time.
            atomic_write_json(staging / "manifest.json", {**read_json(staging / "manifest.json"),
                                                          "timings": self.runner.timings})
        log.info("wrote %d pairs to %s", len(pairs), out)
        return out

    def _synthesize_captions(self, pairs: list[OutputPair]) -> tuple[list[OutputPair], dict]:
        """Each pair's captions, then ``extra_captions`` more from the vision-language model."""
        s, runner = self.settings, self.runner
        built = [self.given_models["vlm"]] if "vlm" in self.given_models else []

        def get_vlm():
            if not built:
                built.append(s.build_vlm(self.runtime))
            return built[0]

        extra = caption_synthesis_stage(runner, "caption_synthesis",
                                        runner.plan["caption_synthesis"].settings,
                                        [p.image for p in pairs], get_vlm)
        originals = [list(p.captions) for p in pairs]
        out = [OutputPair(image=p.image, captions=o + e, info=p.info)
               for p, o, e in zip(pairs, originals, extra)]
        return out, describe(s, originals, runner.stage_keys["caption_synthesis"])

    def distill(self, dataset: Dataset) -> tuple[list[OutputPair], dict[str, Any]]:
        """Run the stages; return the pairs and the manifest entries of this method (plus,
        under ``n_valid`` and ``problems``, what the stages learnt about the source)."""
        raise NotImplementedError


__all__ = ["DTYPES", "DistillMethod", "DistillSettings"]
