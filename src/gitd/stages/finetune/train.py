"""The fine-tuning loop: data order, exact large-batch gradients, checkpoints, curves.

**Batches.** Training items are (image, caption) pairs, one per caption, as EDGE's loader gives
them. Each epoch shuffles them with a generator seeded by (seed, epoch); step s takes pairs
``[s*B, (s+1)*B)`` of that order (the last incomplete batch is dropped). With P processes, rank
r holds the r-th slice of B/P pairs, split into micro-batches of at most ``micro_batch`` pairs
(``gitd.stages.finetune.memory``: on CUDA ``auto`` takes the most that fit the free memory).

**Exact gradients however the batch is split.** The contrastive and diversity terms couple all
pairs of a batch, so summing per-micro-batch or per-process losses would change the objective
(fewer negatives). gitd computes the loss of the whole batch of B pairs exactly, with gradient
caching (Gao et al., 2021): a first pass without gradients gives every pair's features; they are
gathered from all processes, the loss and its gradient with respect to each feature are
computed on the full batch; a second pass recomputes each micro-batch with gradients and
back-propagates those feature gradients; the parameter gradients are then summed over
processes. One process with one micro-batch skips this and back-propagates the loss directly.
The cost is one extra forward pass without gradients.

**Resume.** Every ``checkpoint_every`` steps the main process writes ``checkpoint.safetensors``
atomically. A re-run of the same command loads it, drops curve lines written after it, and goes
on: every pair's timestep and noise come from (seed, epoch, pair), and the data order from
(seed, epoch), so the resumed run computes exactly the steps the killed one would have.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from gitd.data import load_dataset
from gitd.data.formats import dataset_fingerprint
from gitd.data.images import ImageError, open_rgb
from gitd.errors import ConfigError, GitdError
from gitd.log import get_logger, progress
from gitd.stages.vae_encoding import preprocess
from gitd.stages.finetune.losses import loss_terms
from gitd.stages.finetune.memory import (choose_micro_batch, fixed_micro_batch,
                                         per_pair_from_probe, split_sizes)
from gitd.stages.finetune.objective import (EdgeModels, build_edge_models, draw_noise,
                                            image_features, pair_seed, sd_text_states,
                                            text_features)
from gitd.stages.finetune.settings import FinetuneSettings
from gitd.stages.finetune.state import (CHECKPOINT, TRAINED, load_checkpoint, save_checkpoint,
                                        save_trained)
from gitd.store import atomic_write_json, atomic_write_text, fingerprint, read_json, to_json
from gitd.threads import use_threads

log = get_logger("finetune")

SETTINGS = "settings.json"
CURVES = "curves.jsonl"
SUMMARY = "run.json"
VERIFIED = "images.json"
_OURS = {SETTINGS, CURVES, SUMMARY, VERIFIED, TRAINED, CHECKPOINT}


class _Pairs(torch.utils.data.Dataset):
    """Item i: (i, image of pair i as [3, R, R] in [-1, 1])."""

    def __init__(self, paths: Sequence[Path], resolution: int):
        self.paths = list(paths)
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, preprocess(open_rgb(self.paths[i]), self.resolution)
        except ImageError as exc:
            # ImageError's constructor takes two arguments; a DataLoader worker can re-raise
            # only one-argument exceptions faithfully.
            raise GitdError(str(exc)) from None


def resolve_mixed_precision(value: str, device_type: str) -> str:
    """``auto``: bf16 on a CUDA GPU that computes it natively (``gitd.models.gpu.bf16_native``:
    not the emulated bf16 of T4/V100/RTX 20xx), else fp16; no mixed precision off CUDA."""
    from gitd.models.gpu import bf16_native

    if value != "auto":
        return value
    if device_type != "cuda":
        return "no"
    return "bf16" if bf16_native() else "fp16"


def make_accelerator(settings: FinetuneSettings):
    from accelerate import Accelerator

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available (use --device cpu "
                          "or auto)")
    cpu = settings.device == "cpu" or not torch.cuda.is_available()
    mp = resolve_mixed_precision(settings.mixed_precision, "cpu" if cpu else "cuda")
    if cpu and mp == "fp16":
        raise ConfigError("mixed_precision fp16 needs CUDA; on a CPU use bf16 or no")
    if not cpu and mp == "bf16":
        from gitd.models.gpu import bf16_native

        if not bf16_native():
            log.warning("this GPU computes bf16 only by emulation (slow; cuDNN has no bf16 "
                        "convolutions there): --mixed-precision fp16 is the faster choice")
    return Accelerator(cpu=cpu, mixed_precision=mp)


class Trainer:
    """Owns the models, the optimiser and one accelerator; ``step`` runs one optimiser step."""

    def __init__(self, models: EdgeModels, settings: FinetuneSettings, accelerator):
        self.m, self.s, self.acc = models, settings, accelerator
        self.params = dict(models.trainable())
        if not self.params:
            raise ConfigError(f"{models.base['model']}: the UNet has no parameter whose name "
                              "contains 'bias' or 'norm'; nothing to fine-tune")
        sgd = torch.optim.SGD(list(self.params.values()), lr=settings.lr,
                              momentum=settings.momentum, weight_decay=settings.weight_decay)
        self.optimizer = accelerator.prepare(sgd)
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        if settings.gradient_checkpointing:
            models.unet.enable_gradient_checkpointing()
            models.vae.enable_gradient_checkpointing()
        models.unet.train()

    @property
    def local_batch(self) -> int:
        return self.s.batch_size // self.world

    def _terms(self, image, text, mse) -> dict[str, torch.Tensor]:
        s = self.s
        return loss_terms(image, text, mse, contrastive_weight=s.contrastive_weight,
                          diversity_weight=s.diversity_weight, denoise_weight=s.denoise_weight,
                          temperature=s.temperature)

    def _noise(self, seeds: Sequence[int]):
        r = self.s.resolution // 8
        channels = int(self.m.unet.config.in_channels)
        return draw_noise(seeds, (channels, r, r), len(self.m.alphas_cumprod))

    def step(self, micro: list[tuple[torch.Tensor, list[str], list[int]]]) -> dict[str, float]:
        """One optimiser step over this process's micro-batches ``(pixels, captions, seeds)``;
        returns the loss terms of the whole batch (every process returns the same)."""
        acc = self.acc
        self.optimizer.zero_grad(set_to_none=True)
        prepared = []
        for pixels, captions, seeds in micro:
            with acc.autocast():
                states = sd_text_states(self.m, captions)
                text = text_features(self.m, captions)
            prepared.append((pixels, states, text, self._noise(seeds)))
        if self.world == 1 and len(prepared) == 1:
            pixels, states, text, noise = prepared[0]
            with acc.autocast():
                image, mse = image_features(self.m, pixels, states, noise)
            terms = self._terms(image, text, mse)
            acc.backward(terms["loss"])
        else:
            terms = self._cached_step(prepared)
        if self.world > 1:
            self._sum_gradients()
        self.optimizer.step()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["skipped"] = bool(getattr(self.optimizer, "step_was_skipped", False))
        return out

    def probe_peak(self, pixels: torch.Tensor, captions: list[str], seeds: list[int]) -> int:
        """Peak CUDA memory above the baseline of one gradient pass over these pairs (what a
        micro-batch of their number costs); leaves no gradient behind. CUDA only."""
        device = self.acc.device
        self.optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with self.acc.autocast():
            states = sd_text_states(self.m, captions)
            image, mse = image_features(self.m, pixels, states, self._noise(seeds))
        self.acc.backward(image.float().sum() + mse.float().sum())
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del image, mse, states
        self.optimizer.zero_grad(set_to_none=True)
        return int(peak)

    def _cached_step(self, prepared) -> dict[str, torch.Tensor]:
        acc, s = self.acc, self.s
        feats, texts, mses = [], [], []
        with torch.no_grad():
            for pixels, states, text, noise in prepared:
                with acc.autocast():
                    image, mse = image_features(self.m, pixels, states, noise)
                feats.append(image.float())
                texts.append(text.float())
                mses.append(mse.float())
        image_all = acc.gather(torch.cat(feats)).detach().requires_grad_(True)
        text_all = acc.gather(torch.cat(texts)).detach()
        mse_all = acc.gather(torch.cat(mses)).detach()
        terms = self._terms(image_all, text_all, mse_all)
        coupled = (s.contrastive_weight * terms["contrastive"]
                   + s.diversity_weight * terms["diversity"])
        (grad_all,) = torch.autograd.grad(coupled, image_all)
        n_all = len(image_all)
        lo = self.rank * self.local_batch
        offset = lo
        for pixels, states, text, noise in prepared:
            n = len(pixels)
            with acc.autocast():
                image, mse = image_features(self.m, pixels, states, noise)
            surrogate = (image.float() * grad_all[offset:offset + n]).sum()
            if s.denoise_weight:
                surrogate = surrogate + s.denoise_weight * mse.float().sum() / n_all
            acc.backward(surrogate)
            offset += n
        return {k: v.detach() for k, v in terms.items()}

    def _sum_gradients(self) -> None:
        params = list(self.params.values())
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params])
        flat = self.acc.reduce(flat, reduction="sum")
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n


# -- the run ---------------------------------------------------------------------------------
def _check_run_folder(run: Path, dataset) -> None:
    from gitd.outdir import Inputs, refuse_overlap

    refuse_overlap(run, Inputs().dataset(dataset), "run folder")
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--out {run} exists and is not a folder")
    if run.is_dir() and not (run / SETTINGS).is_file():
        foreign = [p.name for p in run.iterdir() if p.name not in _OURS
                   and not p.name.startswith(".")]
        if foreign:
            raise ConfigError(f"--out {run} is a non-empty folder that is not a gitd finetune "
                              f"run (it holds {foreign[0]!r}); use a new folder")


def _verified_records(dataset, run: Path, data_key: str, acc, workers: int):
    """Records whose images decode, checked once by the main process and kept in the run."""
    from gitd.data.formats import verify_image_files

    path = run / VERIFIED
    cached = read_json(path)
    if acc.is_main_process and not (cached and cached.get("data") == data_key):
        results = verify_image_files([r.image for r in dataset.records],
                                     workers=max(1, workers), desc="verifying images")
        bad = [{"id": r.id, "file": str(r.image), "kind": kind, "problem": msg}
               for r, (size, kind, msg) in zip(dataset.records, results) if size is None]
        atomic_write_json(path, {"data": data_key, "bad": bad})
    acc.wait_for_everyone()
    bad = read_json(path)["bad"]
    for b in bad:
        log.warning("%s: %s (skipped)", b["file"], b["problem"])
    skip = {b["id"] for b in bad}
    return [r for r in dataset.records if r.id not in skip], bad


def _read_curves(path: Path, upto: int) -> list[str]:
    lines = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the half-written last line of a killed run
            if isinstance(row, dict) and int(row.get("step", 0)) <= upto:
                lines.append(line)
    return lines


def finetune(data: str | Path, run: str | Path, settings: FinetuneSettings, *,
             images: str | Path | None = None, split: str = "train", strict: bool = False,
             allow_outside_root: bool = False, models: EdgeModels | None = None,
             accelerator=None,
             on_step: Callable[[int], None] | None = None) -> Path:
    """Fine-tune the UNet's DiffFit parameters on ``data``; write the run to ``run``.

    Re-running with the same data and settings resumes from the last checkpoint (or returns at
    once when the run is finished). ``on_step(step)`` is called after each step (and its
    checkpoint, if one is due) is written; tests use it to kill the process at a known point.
    A new run that fails before its first step (a bad setting, a model that cannot be loaded)
    leaves nothing behind. Returns ``run``.
    """
    run = Path(run)
    new = not (run / SETTINGS).exists() and not (run / VERIFIED).exists()
    created = not run.exists()
    try:
        return _finetune(data, run, settings, images=images, split=split, strict=strict,
                         allow_outside_root=allow_outside_root, models=models,
                         accelerator=accelerator, on_step=on_step)
    except BaseException:
        if new:
            _discard_unstarted(run, created)
        raise


def _discard_unstarted(run: Path, created: bool) -> None:
    """Remove what a new run wrote before failing, unless it trained a step (that is work to
    resume): the image check, the settings record, empty curves, and the folder it made."""
    if (run / CHECKPOINT).exists() or (run / TRAINED).exists() or _read_curves(run / CURVES, 1):
        return
    for name in (VERIFIED, SETTINGS, CURVES):
        (run / name).unlink(missing_ok=True)
    if created:
        try:
            run.rmdir()
        except OSError:  # something else is in it now: not ours to remove
            pass


def _finetune(data, run: Path, settings: FinetuneSettings, *, images, split, strict,
              allow_outside_root, models, accelerator, on_step) -> Path:
    settings.validate()
    acc = accelerator or make_accelerator(settings)
    dataset = load_dataset(data, images, split=split, strict=strict,
                           allow_outside_root=allow_outside_root)
    _check_run_folder(run, dataset)
    data_key = dataset_fingerprint(dataset)
    if acc.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    records, bad = _verified_records(dataset, run, data_key, acc, settings.num_workers)
    pairs = [(r, c) for r in records for c in r.captions]
    world = acc.num_processes
    if settings.batch_size % world:
        raise ConfigError(f"batch_size {settings.batch_size} must be divisible by the number of "
                          f"processes ({world})")
    micro = fixed_micro_batch(settings.micro_batch, settings.gradient_accumulation_steps,
                              settings.batch_size // world)
    if len(pairs) < settings.batch_size:
        raise ConfigError(f"{data}: {len(pairs)} image-caption pairs, fewer than one batch of "
                          f"{settings.batch_size}; lower --batch-size")

    base = models.base if models is not None else {
        "model": settings.diffusion_model, "revision": settings.diffusion_revision,
        "seed": settings.seed}
    # More than one CPU thread changes the last bits of every step (gitd.threads).
    threads = use_threads([settings.diffusion_model, settings.clip_model])
    threads = threads if acc.device.type == "cpu" and threads > 1 else None
    record = {"settings": settings.to_dict(), "base": base, "data": {
        "path": str(Path(data).resolve()), "format": dataset.format, "split": dataset.split,
        "fingerprint": data_key, "images": len(records), "pairs": len(pairs),
        "skipped": [p.to_dict() for p in dataset.problems] + bad}, "cpu_threads": threads}
    key = fingerprint({"settings": settings.result_dict(), "base": base, "data": data_key,
                       "pairs": len(pairs), **({"cpu_threads": threads} if threads else {})})
    previous = read_json(run / SETTINGS)
    if previous and previous.get("key") != key:
        old = previous.get("settings", {})
        changed = sorted(k for k in settings.result_dict() if old.get(k) != getattr(settings, k))
        if previous.get("cpu_threads") != threads:
            changed.append(f"CPU threads ({previous.get('cpu_threads') or 1} then, "
                           f"{threads or 1} now: --threads)")
        what = ", ".join(changed) if changed else "the data"
        raise ConfigError(f"{run} holds a run with other settings ({what} differ); resume it "
                          "with its own settings or use a new --out")
    if acc.is_main_process and not previous:
        atomic_write_json(run / SETTINGS, {**record, "key": key})
    if (read_json(run / SUMMARY) or {}).get("key") == key and (run / TRAINED).is_file():
        log.info("%s: already finished; nothing to do", run)
        return run
    if models is None:
        frozen = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(acc.mixed_precision,
                                                                        torch.float32)
        models = build_edge_models(settings.diffusion_model, settings.clip_model,
                                   device=acc.device, frozen_dtype=frozen, seed=settings.seed,
                                   diffusion_revision=settings.diffusion_revision,
                                   clip_revision=settings.clip_revision)

    trainer = Trainer(models, settings, acc)
    steps_per_epoch = len(pairs) // settings.batch_size
    total = steps_per_epoch * settings.epochs
    step = 0
    if (run / CHECKPOINT).is_file():
        step = load_checkpoint(run / CHECKPOINT, params=trainer.params,
                               optimizer=trainer.optimizer, scaler=acc.scaler, key=key)
        log.info("resuming %s at step %d of %d", run, step, total)
    curves = run / CURVES
    kept = _read_curves(curves, step)
    # Training time so far: the steps the curves kept (a killed run's last steps are redone).
    seconds_before = sum(float(json.loads(line).get("seconds", 0.0)) for line in kept)
    acc.wait_for_everyone()
    if acc.is_main_process:
        atomic_write_text(curves, "".join(line + "\n" for line in kept))
    acc.wait_for_everyone()
    n_trainable = sum(p.numel() for p in trainer.params.values())
    paths = [r.image for r, _ in pairs]
    local = trainer.local_batch
    if micro is None:
        micro = _auto_micro_batch(trainer, pairs, paths, settings)
    sizes = split_sizes(local, micro)
    accum = len(sizes)
    log.info("fine-tuning %d UNet parameters (%d tensors) on %d pairs: %d epochs x %d steps of "
             "%d pairs, %d process(es), micro-batches of %s pairs, mixed precision %s",
             n_trainable, len(trainer.params), len(pairs), settings.epochs, steps_per_epoch,
             settings.batch_size, world, "+".join(map(str, sizes)), acc.mixed_precision)
    starts = np.cumsum([0] + sizes)
    t_start = time.perf_counter()
    bar = progress(desc="finetune", total=total, unit="step") if acc.is_main_process else None
    if bar is not None:
        bar.update(step)
    log_file = open(curves, "a", encoding="utf-8") if acc.is_main_process else None
    try:
        while step < total:
            epoch, first = divmod(step, steps_per_epoch)
            order = np.random.default_rng([settings.seed, epoch]).permutation(len(pairs))
            batches = []
            for s in range(first, steps_per_epoch):
                mine = order[s * settings.batch_size + trainer.rank * local:][:local]
                batches += [mine[starts[a]:starts[a + 1]].tolist() for a in range(accum)]
            loader = torch.utils.data.DataLoader(
                _Pairs(paths, settings.resolution), batch_sampler=batches,
                num_workers=settings.num_workers)
            it = iter(loader)
            for s in range(first, steps_per_epoch):
                t0 = time.perf_counter()
                parts = []
                for _ in range(accum):
                    idx, pixels = next(it)
                    idx = idx.tolist()
                    parts.append((pixels, [pairs[i][1] for i in idx],
                                  [pair_seed(settings.seed, epoch, i) for i in idx]))
                terms = trainer.step(parts)
                step += 1
                dt = time.perf_counter() - t0
                if log_file is not None:
                    row = {"step": step, "epoch": epoch, "pairs_seen": step * settings.batch_size,
                           **{k: round(v, 6) if isinstance(v, float) else v
                              for k, v in terms.items()},
                           "lr": settings.lr, "seconds": round(dt, 4),
                           "pairs_per_s": round(settings.batch_size / max(dt, 1e-9), 3)}
                    log_file.write(to_json(row, indent=None) + "\n")
                    log_file.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{terms['loss']:.4f}",
                                    pairs_s=f"{settings.batch_size / max(dt, 1e-9):.1f}")
                    bar.update(1)
                if not math.isfinite(terms["loss"]) and not terms["skipped"]:
                    raise GitdError(f"loss became {terms['loss']} at step {step}; lower --lr "
                                    f"(now {settings.lr}) or use --mixed-precision no")
                if step % settings.checkpoint_every == 0 or step == total:
                    _checkpoint(run, step, trainer, acc, key, log_file)
                if on_step is not None:
                    on_step(step)
    finally:
        if bar is not None:
            bar.close()
        if log_file is not None:
            log_file.close()
    seconds = seconds_before + time.perf_counter() - t_start
    if acc.is_main_process:
        save_trained(run / TRAINED, trainer.params, models.base)
        from gitd.data.output import now_iso, package_versions

        atomic_write_json(run / SUMMARY, {
            **record, "key": key, "steps": total, "steps_per_epoch": steps_per_epoch,
            "trainable_parameters": n_trainable, "trainable_tensors": len(trainer.params),
            "processes": world, "gradient_accumulation_steps": accum, "micro_batches": sizes,
            "mixed_precision": acc.mixed_precision, "device": str(acc.device),
            "seconds": round(seconds, 3), "created": now_iso(), "versions": package_versions()})
        log.info("wrote %s (%d tensors)", run / TRAINED, len(trainer.params))
    acc.wait_for_everyone()
    return run


def _auto_micro_batch(trainer: Trainer, pairs, paths, settings: FinetuneSettings) -> int:
    """``--micro-batch auto``: on CUDA, the most pairs that fit the free memory, from the peak
    of a gradient pass over 1 and over 2 pairs; elsewhere the whole local batch."""
    local = trainer.local_batch
    if trainer.acc.device.type != "cuda" or local < 2:
        return local
    from gitd.models.gpu import free_memory, release_memory

    data = _Pairs(paths[:2], settings.resolution)
    items = [data[0], data[1]]
    pixels = torch.stack([x for _, x in items])
    captions = [pairs[0][1], pairs[1][1]]
    seeds = [pair_seed(settings.seed, 0, 0), pair_seed(settings.seed, 0, 1)]
    peak_one = trainer.probe_peak(pixels[:1], captions[:1], seeds[:1])
    peak_two = trainer.probe_peak(pixels, captions, seeds)
    fixed, per_pair = per_pair_from_probe(peak_one, peak_two)
    release_memory(trainer.acc.device)
    free = free_memory(trainer.acc.device)
    micro = choose_micro_batch(free, per_pair, local, fixed=fixed)
    log.info("micro-batch auto: %d pairs (a pair's gradient pass takes %.2f GiB, %.1f GiB free)",
             micro, per_pair / 2**30, free / 2**30)
    return micro


def _checkpoint(run: Path, step: int, trainer: Trainer, acc, key: str, log_file) -> None:
    if acc.is_main_process:
        if log_file is not None:
            os.fsync(log_file.fileno())
        save_checkpoint(run / CHECKPOINT, step=step, params=trainer.params,
                        optimizer=trainer.optimizer, scaler=acc.scaler, key=key)
    acc.wait_for_everyone()
