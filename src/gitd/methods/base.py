"""What every distillation method shares: its common settings and the run around its plan.

A distillation method subclasses :class:`DistillMethod`, declares ``Settings`` (a subclass of
:class:`DistillSettings`), ``presets`` and ``roles``, builds its plan in ``plan(settings,
runtime)`` (``gitd.plan.Plan``: each stage with its function, settings, models and the entries
it reads, and the named outputs ``images`` and those it assembles from), and implements
``assemble(results)``, which turns the finished plan's results into the output pairs plus the
method's own manifest entries. Everything else is done here, once for all methods: loading the
data and the one check of the number of pairs against it, the device, the caption synthesis
after the method's stages (``--extra-captions``), running the plan (``gitd.plan.PlanRunner``:
caching, resuming, releasing models, timings), the output folder's safety (``gitd.outdir``),
the manifest and ``config.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gitd.data.formats import dataset_fingerprint, load_dataset, note_input_change
from gitd.data.output import OutputPair, source_block, write_output
from gitd.errors import ConfigError, GitdError
from gitd.log import get_logger
from gitd.models.offload import OffloadFields
from gitd.models.roles import Models, Runtime, describe_roles, untrained
from gitd.outdir import Inputs, OutputFolder
from gitd.plan import Plan, PlanRunner, Results
from gitd.registry import MAX_PAIRS, Method, MethodSettings
from gitd.settings import Interval, Options, PathText, Text, setting
from gitd.stages.caption_synthesis import (ROLE as VLM_ROLE, CaptionSynthesisFields,
                                           caption_synthesis_stage, describe)
from gitd.store import atomic_write_json, read_json
from gitd.threads import threads_for

log = get_logger("methods")

DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class DistillSettings(CaptionSynthesisFields, OffloadFields, MethodSettings):
    """What every distillation method has besides ``MethodSettings``: the output size, the
    dtype, CPU offload of the large models, the work folder, and the optional caption synthesis
    after the method's own stages (``--extra-captions N``)."""

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
    def full_plan(cls, s: DistillSettings, rt: Runtime) -> Plan:
        """The method's plan, then the caption synthesis of its ``images`` output when
        ``s.extra_captions`` asks for it (its key follows those images only)."""
        plan = cls.plan(s, rt)
        if s.extra_captions:
            images = plan.outputs["images"]
            step = plan.add("caption_synthesis", s.caption_synthesis_settings(rt),
                            lambda call: caption_synthesis_stage(call, images(call)),
                            upstream=images.reads, roles={"vlm": "vlm"})
            plan.output("extra_captions", lambda results: results[step], reads=(step,))
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
        # The one check of the number of pairs against the data; a stage that picks from the
        # images it could read says so itself when too few could be.
        if s.pairs > len(dataset):
            raise ConfigError(f"asked for {s.pairs} pairs but {data} has only "
                              f"{len(dataset)} valid images")
        if dataset.problems:
            log.warning("%d input problems; those rows are skipped (listed in the manifest; "
                        "run 'gitd check' for details, or --strict to stop on them)",
                        len(dataset.problems))
        # The models the run uses choose the CPU thread count (gitd.threads), which the stage
        # keys record. Every role's model first; only where a role the plan leaves unused
        # changed the count (a real --vlm beside tiny models, say) is the plan made again.
        names = {role: spec.ref(s).name for role, spec in self.all_roles.items()}
        runtime = Runtime.resolve(s.device, s.dtype, names.values())
        plan = self.full_plan(s, runtime)
        used = [names[role] for role in plan.roles_used() if role in names]
        if threads_for(used) != runtime.threads:
            runtime = Runtime.resolve(s.device, s.dtype, used)
            plan = self.full_plan(s, runtime)
        folder = OutputFolder.prepare(out, command="distill", work=work, inputs=Inputs().dataset(
            dataset).file(config_file, "config file"))
        models = Models(self.all_roles, s, runtime.device, runtime.dtype, self.given_models,
                        offload=s.offload, stage_roles=[e.roles.values() for e in plan])
        data_key = dataset_fingerprint(dataset)
        note_input_change(work, dataset, data_key)
        runner = PlanRunner(work, plan, data_key, models, dataset=dataset, on_unit=on_unit)
        self.check_models(runner)
        runner.timings["load"] = round(time.perf_counter() - t0, 3)
        results = runner.run()
        pairs, extra = self.assemble(results)
        if "extra_captions" in plan.outputs:
            originals = [list(p.captions) for p in pairs]
            pairs = [OutputPair(image=p.image, captions=o + e, info=p.info)
                     for p, o, e in zip(pairs, originals, results.output("extra_captions"))]
            step = plan.outputs["extra_captions"].reads[0]
            extra["caption_synthesis"] = describe(s, originals, runner.keys[step])
        described = describe_roles(self.all_roles, s, used=plan.roles_used(models.requires))
        manifest = {
            "method": self.name, "kind": self.kind, "preset": s.preset, "seed": s.seed,
            "config": s.to_dict(),
            "models": described, "untrained": untrained(described),
            **{k: v for k, v in extra.items() if k not in ("n_valid", "problems")},
            "source": source_block(dataset, n_valid=extra.get("n_valid")),
            "work": str(work.resolve()), "stages": runner.stage_keys, "plan": runner.describe(),
            "skipped": [p.to_dict() for p in dataset.problems + list(extra.get("problems", []))],
            "timings": runner.timings, "device": str(runtime.device),
            "dtype": runtime.dtype_name.removeprefix("torch."),
        }
        t_out = time.perf_counter()
        with folder.replace() as staging:
            write_output(staging, pairs, manifest)
            # The settings alone, loadable with `gitd distill --config OUT/config.json`.
            atomic_write_json(staging / "config.json", s.to_dict())
            runner.timings["output"] = round(time.perf_counter() - t_out, 3)
            # Written once more so that it carries the output stage's own time.
            atomic_write_json(staging / "manifest.json", {**read_json(staging / "manifest.json"),
                                                          "timings": runner.timings})
        log.info("wrote %d pairs to %s", len(pairs), out)
        return out

    def check_models(self, runner: PlanRunner) -> None:
        """Before any work: one message naming every model the stages still to run need that
        cannot be had, with the 'gitd fetch' command that fetches them (a stage already done
        needs no model)."""
        from gitd.models.fetch import check_models, fetch_command, needs_of_roles
        from gitd.store import Stage

        models = runner.models
        todo = [e for e in runner.plan if not e.cached
                or not Stage(runner.work, e.name, runner.payloads[e]).done]
        used = {r for e in todo for role in e.roles.values() for r in models.requires(role)}
        s = self.settings
        base = f"gitd fetch --method {self.name}" + (f" --preset {s.preset}" if s.preset else "")
        covered = []
        if s.preset:
            preset = self.configure(s.preset)
            covered = needs_of_roles(self.all_roles, preset, used=self.roles_used(preset))
        check_models(needs_of_roles(self.all_roles, s, used=used - set(self.given_models)),
                     command=lambda bad: fetch_command(bad, base=base, covered=covered))

    @classmethod
    def roles_used(cls, s: DistillSettings) -> set[str]:
        """The model roles a run with these settings uses (its plan's, with shared ones)."""
        from gitd.models.roles import Models

        rt = Runtime.resolve("cpu", "float32")  # what a plan's roles do not depend on
        roles = {**cls.roles, "vlm": VLM_ROLE}
        return cls.full_plan(s, rt).roles_used(Models(roles, s, rt.device, rt.dtype).requires)

    def assemble(self, results: Results) -> tuple[list[OutputPair], dict[str, Any]]:
        """The output pairs from the finished plan's results (``results[entry]``,
        ``results.output(name)``, ``results.dataset``), and the manifest entries of this method
        (plus, under ``n_valid`` and ``problems``, what the stages learnt about the source)."""
        raise NotImplementedError
