"""The first thing to run on a GPU: gitd's real-model path end to end, timed against its FLOPs.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--dtype float16|bfloat16]
    python benchmarks/gpu_check.py --device cpu --smoke     # the same code path, tiny models

On one CUDA GPU, in a few minutes (the budget is 8), with the full-size random-weight models
of the ``random-paper`` presets (``gitd.models.fullsize``, ``gitd.models.fullsize_unclip``:
the real architectures, so the real cost, no download):

* ``distill-gitd``, ``distill-pds``, ``distill-edge``: ``gitd.methods.distill`` end to end at
  ``--pairs`` pairs on a small stand-in dataset (``gitd.data.shapes`` at the preset's
  resolution), in ``--dtype``, with ``--offload auto``;
* ``finetune-step``: one ``gitd finetune --preset random-paper`` step (batch 128) with
  ``--micro-batch auto`` (the micro-batch it chose is in the JSON);
* ``encode-256``, ``encode-512``: VAE-encode throughput (``gitd.stages.vae_encoding.vae_latents``);
* ``clara``: CLARA k-medoids at Flickr30K's size (29,000 rows of 4x32x32 = 4,096 latent values,
  k = 500) with the assignment passes on the GPU (``gitd.stages.clara.clara``).

For each: wall seconds, peak GPU memory (``torch.cuda.max_memory_allocated``; with ``--device
cpu`` the process's private memory above what it held before, ``RssAnon``), the FLOPs of its
main models counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (one
call at batch 1, times the number of such calls the run makes: UNet, VAE and CLIP image tower;
text encoders and captioners are left out, so the floor is a little low), the floor (FLOPs /
the device's peak FLOP/s: the data sheet's dense fp16/bf16 tensor-core figure for the GPU's
name, ``gitd.models.gpu.PEAK_FLOPS``, else a measured matmul) and the ratio seconds / floor.
For the distill items the ratio is that of the generation stage alone (``img2img``, ``unclip``
or ``text2img``, as the methods' plans name it; its seconds from the manifest, without model
building); the whole run's seconds are listed too. The presets are read from the one registry
of presets (``gitd.presets``): a preset this script needs that a method lacks is one line.

Without a CUDA GPU (and without ``--device cpu``) it says so in one line and exits 0. Exit
status 1: some item failed (its error is in the table and the JSON). ``--smoke`` runs every
item with the tiny presets and sizes, so ``tests/benchmarks`` can check the code path and the
JSON on a CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, machine  # noqa: E402

NO_GPU = ("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to check. "
          "Run it on a GPU machine, or add --device cpu --smoke to try the code path")


@dataclass(frozen=True)
class Sizes:
    """What each item runs: the real sizes (``full``) or the tiny ones (``smoke``)."""

    preset: str            # distill presets (random-paper / tiny)
    finetune_preset: str
    images: int            # stand-in dataset: training images (5 captions each)
    pairs: int
    encode_sides: tuple[int, ...]
    encode_images: int
    encode_batch: int
    clara_rows: int
    clara_dim: int
    clara_k: int


FULL = Sizes(preset="random-paper", finetune_preset="random-paper", images=26, pairs=2,
             encode_sides=(256, 512), encode_images=128, encode_batch=16,
             clara_rows=29_000, clara_dim=4 * 32 * 32, clara_k=500)
SMOKE = Sizes(preset="tiny", finetune_preset="tiny", images=8, pairs=2, encode_sides=(32, 64),
              encode_images=8, encode_batch=4, clara_rows=1_500, clara_dim=64, clara_k=10)
# The generation stage of each method's plan (gitd.plan), whose time the ratio is of.
GENERATION_STAGE = {"gitd": "img2img", "pds": "unclip", "edge": "text2img"}


@dataclass
class Result:
    name: str
    seconds: float | None = None
    peak_memory_mib: float | None = None
    flops: float | None = None
    floor_seconds: float | None = None
    ratio: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# -- the device ---------------------------------------------------------------------------------
class Device:
    """Timing, peak memory and the peak FLOP/s of the device under test."""

    def __init__(self, name: str, dtype_name: str):
        import torch

        self.torch = torch
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"
        self.dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                      "float32": torch.float32}[dtype_name]
        if not self.cuda:
            self.dtype = torch.float32  # what gitd's dtype auto picks off CUDA
        self.name = torch.cuda.get_device_name(self.device) if self.cuda else machine()
        self.peak_flops, self.peak_source = self._peak()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def _peak(self) -> tuple[float, str]:
        from gitd.models.gpu import peak_flops_from_name

        if self.cuda:
            sheet = peak_flops_from_name(self.name)
            if sheet is not None:
                return sheet, f"data sheet ({self.name}, dense fp16/bf16)"
        torch = self.torch
        n = 8192 if self.cuda else 1024
        a = torch.randn(n, n, device=self.device, dtype=self.dtype)
        b = torch.randn(n, n, device=self.device, dtype=self.dtype)
        a @ b
        self.sync()
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2.0:
            a @ b
            done += 1
        self.sync()
        rate = 2 * n ** 3 * done / (time.perf_counter() - t0)
        return rate, f"measured {n}x{n} {str(self.dtype).removeprefix('torch.')} matmul"

    def measure(self, run: Callable[[], dict[str, Any]]) -> tuple[float, float, dict[str, Any]]:
        """(seconds, peak MiB, run's own detail) of ``run()``."""
        torch = self.torch
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            self.sync()
            t0 = time.perf_counter()
            detail = run()
            self.sync()
            seconds = time.perf_counter() - t0
            peak = (torch.cuda.max_memory_allocated(self.device) - base) / 2 ** 20
        else:
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                detail = run()
                seconds = time.perf_counter() - t0
            peak = mem.report()["peak_private_mib"]
        return seconds, peak, detail or {}


# -- FLOPs, counted on the meta device -----------------------------------------------------------
class Counter:
    """FLOPs of one call of a model's part at batch 1, counted with ``FlopCounterMode`` on
    the meta device (shapes only: no memory, no compute), cached per model."""

    def __init__(self, dtype):
        import torch

        self.torch = torch
        self.dtype = dtype
        self.meta = torch.device("meta")
        self._models: dict[tuple[str, str], Any] = {}

    def model(self, kind: str, name: str):
        from gitd.models import build

        if (kind, name) not in self._models:
            with self.meta:
                self._models[(kind, name)] = build(kind, name, device=self.meta, dtype=self.dtype)
        return self._models[(kind, name)]

    def count(self, fn: Callable[[], Any]) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn()
        return float(counter.get_total_flops())

    def empty(self, *shape):
        return self.torch.empty(*shape, device=self.meta, dtype=self.dtype)

    def unet(self, pipe, side: int, *, image_embed: int | None = None) -> float:
        unet = pipe.unet
        r = side // 8
        context = self.empty(1, 77, int(unet.config.cross_attention_dim))
        t = self.torch.zeros(1, dtype=self.torch.long, device=self.meta)
        extra = {}
        if image_embed:
            extra["class_labels"] = self.empty(1, 2 * image_embed)
        return self.count(lambda: unet(self.empty(1, int(unet.config.in_channels), r, r), t,
                                       encoder_hidden_states=context, **extra))

    def vae_decode(self, vae, side: int) -> float:
        return self.count(lambda: vae.decode(self.empty(1, 4, side // 8, side // 8)))

    def vae_encode(self, vae, side: int) -> float:
        return self.count(lambda: vae.encode(self.empty(1, 3, side, side)))

    def clip_image(self, score) -> float:
        size = score.image_processor.crop_size
        pixels = self.empty(1, 3, int(size["height"]), int(size["width"]))
        return self.count(lambda: score.model.get_image_features(pixel_values=pixels))


def distill_flops(method: str, s, counter: Counter, n_images: int) -> dict[str, float]:
    """FLOPs of the main stages of a distill run with settings ``s`` on ``n_images`` images:
    the generation stage (UNet x CFG x steps x images, VAE decodes) and the stage that reads
    every image (VAE encodes for GITD, CLIP image embeddings for PDS)."""
    cfg = 2 if s.guidance_scale > 1 else 1
    if method == "gitd":
        pipe = counter.model("img2img", s.diffusion_model)
        steps = int(s.num_inference_steps * s.strength)
        images = s.pairs * s.num_candidates
        return {"img2img": images * (cfg * steps * counter.unet(pipe, s.resolution)
                                     + counter.vae_decode(pipe.vae, s.resolution)),
                "encode": n_images * counter.vae_encode(pipe.vae, s.resolution)}
    if method == "pds":
        pipe = counter.model("unclip", s.unclip_model)
        embed = int(pipe.image_normalizer.config.embedding_dim)
        score = counter.model("score", s.score_model)
        return {"unclip": s.pairs * (cfg * s.num_inference_steps * counter.unet(
                    pipe, s.resolution, image_embed=embed)
                    + counter.vae_decode(pipe.vae, s.resolution)),
                "embed": n_images * counter.clip_image(score)}
    # EDGE's text2img pipeline is the img2img pipeline's components: the same UNet and VAE.
    pipe = counter.model("img2img", s.diffusion_model)
    return {"text2img": s.pairs * (cfg * s.num_inference_steps * counter.unet(pipe, s.resolution)
                                 + counter.vae_decode(pipe.vae, s.resolution))}


# -- the items -----------------------------------------------------------------------------------
def missing_presets(sizes: Sizes) -> list[str]:
    """The presets the items run that the one registry of presets lacks ("owner/name")."""
    import gitd.stages.finetune.settings  # noqa: F401  (registers gitd finetune's presets)
    from gitd.presets import presets_of
    from gitd.registry import discover

    discover()  # the methods register their presets when their modules are imported
    wanted = [(f"distill:{m}", sizes.preset) for m in GENERATION_STAGE]
    wanted.append(("finetune", sizes.finetune_preset))
    return [f"{owner}/{name}" for owner, name in wanted if name not in presets_of(owner).names]

def dataset(root: Path, images: int, side: int) -> Path:
    from gitd.data.shapes import make_shapes

    folder = root / f"shapes-{side}"
    make_shapes(folder, train=images, test=1, size=side, seed=0, workers=1)
    return folder / "train.json"


def distill_item(method: str, dev: Device, sizes: Sizes, counter: Counter, work: Path) -> Result:
    from gitd.config import make_config
    from gitd.methods import distill

    out = Result(f"distill-{method}")
    s = make_config(sizes.preset, method=method, pairs=sizes.pairs, seed=0,
                    device=str(dev.device), dtype=str(dev.dtype).removeprefix("torch."),
                    offload="auto")
    data = dataset(work, sizes.images, s.resolution)
    target = work / f"out-{method}"

    def run():
        distill(data, target, s)
        manifest = json.loads((target / "manifest.json").read_text())
        return {"stages": manifest["timings"], "preset": sizes.preset, "pairs": s.pairs,
                "images": sizes.images, "resolution": s.resolution}

    out.seconds, out.peak_memory_mib, out.detail = dev.measure(run)
    stage = GENERATION_STAGE[method]
    flops = distill_flops(method, s, counter, sizes.images)
    out.detail["flops_by_stage"] = flops
    out.detail["ratio_stage"] = stage
    out.flops = flops[stage]
    out.floor_seconds = out.flops / dev.peak_flops
    stage_seconds = float(out.detail["stages"].get(stage) or 0.0)
    out.ratio = stage_seconds / out.floor_seconds if stage_seconds else None
    return out


def finetune_item(dev: Device, sizes: Sizes, counter: Counter, work: Path) -> Result:
    from gitd.stages.finetune import FinetuneSettings, finetune

    out = Result("finetune-step")
    s = FinetuneSettings.from_preset(sizes.finetune_preset, epochs=1, micro_batch="auto",
                                     device=dev.device.type, checkpoint_every=10_000)
    # Five captions an image: one batch of pairs and less than two, so one epoch is one step.
    data = dataset(work, math.ceil(s.batch_size / 5), s.resolution)
    run_dir = work / "finetune"

    def run():
        finetune(data, run_dir, s)
        summary = json.loads((run_dir / "run.json").read_text())
        return {"batch_size": s.batch_size, "micro_batches": summary["micro_batches"],
                "mixed_precision": summary["mixed_precision"], "steps": summary["steps"],
                "preset": sizes.finetune_preset}

    out.seconds, out.peak_memory_mib, out.detail = dev.measure(run)
    out.flops = s.batch_size * finetune_pair_flops(s, counter)
    if len(out.detail["micro_batches"]) > 1:
        out.detail["note"] = "gradient caching adds a forward pass without gradients"
    out.floor_seconds = out.flops / dev.peak_flops
    out.ratio = out.seconds / out.floor_seconds
    return out


def finetune_pair_flops(s, counter: Counter) -> float:
    """FLOPs of one pair's training pass, forward and backward (VAE encode, UNet, VAE decode,
    CLIP image tower), counted on the meta device as ``Trainer.probe_peak`` runs it."""
    import torch

    from gitd.stages.finetune.objective import EdgeModels, PairNoise, image_features

    pipe = counter.model("img2img", s.diffusion_model)
    clip = counter.model("score", s.clip_model)
    models = EdgeModels(vae=pipe.vae, unet=pipe.unet, text_encoder=pipe.text_encoder,
                        tokenizer=pipe.tokenizer, alphas_cumprod=torch.linspace(
                            0.99, 0.01, 1000, device="meta"), clip=clip, base={})
    models.freeze()
    r = s.resolution // 8
    noise = PairNoise(timesteps=torch.zeros(1, dtype=torch.long, device="meta"),
                      noise=counter.empty(1, 4, r, r).float(),
                      posterior=counter.empty(1, 4, r, r).float())
    # The text features are computed without gradients, once, and left out.
    context = counter.empty(1, 77, int(pipe.unet.config.cross_attention_dim))

    def step():
        feats, mse = image_features(models, counter.empty(1, 3, s.resolution, s.resolution),
                                    context, noise)
        (feats.sum() + mse.sum()).backward()

    return counter.count(step)


def encode_item(side: int, dev: Device, sizes: Sizes, counter: Counter) -> Result:
    import torch

    from gitd.models import build_vae
    from gitd.stages.vae_encoding import vae_latents

    out = Result(f"encode-{side}")
    vae_name = "random-sd15" if sizes.preset == "random-paper" else "tiny-sd"
    vae = build_vae(vae_name, device=dev.device, dtype=dev.dtype, seed=0)
    gen = torch.Generator("cpu").manual_seed(0)
    batch = (torch.rand(sizes.encode_batch, 3, side, side, generator=gen) * 2 - 1).to(
        dev.device, dev.dtype)
    with torch.inference_mode():
        vae_latents(vae, batch[:1])  # warm-up: kernels chosen, memory pooled

    def run():
        with torch.inference_mode():
            for _ in range(sizes.encode_images // sizes.encode_batch):
                vae_latents(vae, batch)
        return {"images": sizes.encode_images, "batch": sizes.encode_batch, "vae": vae_name}

    out.seconds, out.peak_memory_mib, out.detail = dev.measure(run)
    out.detail["images_per_s"] = sizes.encode_images / out.seconds
    out.flops = sizes.encode_images * counter.vae_encode(counter.model("vae", vae_name), side)
    out.floor_seconds = out.flops / dev.peak_flops
    out.ratio = out.seconds / out.floor_seconds
    return out


def clara_item(dev: Device, sizes: Sizes) -> Result:
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    from gitd.stages.clara import clara

    out = Result("clara")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((sizes.clara_k, sizes.clara_dim), dtype=np.float32)
    rows = centres[rng.integers(0, sizes.clara_k, sizes.clara_rows)]
    X = (rows + 0.5 * rng.standard_normal(rows.shape, dtype=np.float32)).astype(np.float16)
    del rows
    counted = {}

    def run():
        # FlopCounterMode over the timed run itself: its torch work is a few large matmuls
        # (distance matrices, assignment chunks), so counting adds no measurable time.
        with FlopCounterMode(display=False) as counter:
            result = clara(X, sizes.clara_k, seed=0, device=dev.device)
        counted["flops"] = float(counter.get_total_flops())
        return {"rows": sizes.clara_rows, "dim": sizes.clara_dim, "k": sizes.clara_k,
                "cost": float(result.cost), "row_dtype": "float16"}

    out.seconds, out.peak_memory_mib, out.detail = dev.measure(run)
    out.flops = counted["flops"]
    out.floor_seconds = out.flops / dev.peak_flops
    out.ratio = out.seconds / out.floor_seconds
    out.detail["note"] = "FasterPAM on each sample runs on the CPU and is not in the FLOPs"
    return out


# -- the run -------------------------------------------------------------------------------------
def table(results: list[Result]) -> str:
    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    lines = ["| item | seconds | peak memory MiB | TFLOP | floor s | x floor | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        note = r.error or ""
        if not r.error and r.name.startswith("distill-"):
            stage = r.detail.get("ratio_stage")
            note = f"x floor of stage {stage} ({r.detail['stages'].get(stage, 0):.1f} s)"
        elif not r.error and r.name == "finetune-step":
            note = f"micro-batches {'+'.join(map(str, r.detail['micro_batches']))}"
        elif not r.error and r.name.startswith("encode-"):
            note = f"{r.detail['images_per_s']:.1f} images/s"
        lines.append(f"| {r.name} | {fmt(r.seconds, '.1f')} | {fmt(r.peak_memory_mib, '.0f')} | "
                     f"{fmt(None if r.flops is None else r.flops / 1e12, '.3g')} | "
                     f"{fmt(r.floor_seconds, '.3g')} | {fmt(r.ratio, '.1f')} | {note} |")
    return "\n".join(lines)


def run_all(dev: Device, sizes: Sizes, only: set[str] | None) -> list[Result]:
    from gitd.cli.oom import is_out_of_memory

    counter = Counter(dev.dtype)
    items: list[tuple[str, Callable[[Path], Result]]] = [
        *[(f"distill-{m}", lambda w, m=m: distill_item(m, dev, sizes, counter, w))
          for m in ("gitd", "pds", "edge")],
        ("finetune-step", lambda w: finetune_item(dev, sizes, counter, w)),
        *[(f"encode-{side}", lambda w, side=side: encode_item(side, dev, sizes, counter))
          for side in sizes.encode_sides],
        ("clara", lambda w: clara_item(dev, sizes)),
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="gitd-gpu-check-") as tmp:
        for name, item in items:
            if only and name not in only:
                continue
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            try:
                results.append(item(Path(tmp)))
            except Exception as exc:  # one item's failure is a row of the table, not the end
                what = "out of GPU memory" if is_out_of_memory(exc) else type(exc).__name__
                line = " ".join(str(exc).split())[:160]
                results.append(Result(name, error=f"{what}: {line}"))
                if os.environ.get("GITD_GPU_CHECK_TRACEBACK"):
                    traceback.print_exc()
            gc.collect()
            if dev.cuda:
                dev.torch.cuda.empty_cache()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"),
                    help="dtype of the distill runs and encodes on CUDA (CPU: float32)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny presets and sizes: the same code path in seconds (tests)")
    ap.add_argument("--only", nargs="*", metavar="ITEM", help="run only these items")
    ap.add_argument("--out", default="gpu_check.json", help="JSON results (default %(default)s)")
    args = ap.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random-weight models only: never the hub
    from gitd.log import setup_logging

    setup_logging(quiet=True)
    dev = Device(args.device, args.dtype)
    sizes = SMOKE if args.smoke else FULL
    missing = missing_presets(sizes)
    if missing:
        print(f"gpu_check: no preset {', '.join(missing)} in gitd.presets; this gitd cannot run "
              "the check")
        return 1
    t0 = time.perf_counter()
    results = run_all(dev, sizes, set(args.only) if args.only else None)
    total = time.perf_counter() - t0
    report = {
        "device": str(dev.device), "device_name": dev.name, "dtype": str(dev.dtype),
        "peak_flops": dev.peak_flops, "peak_flops_source": dev.peak_source,
        "smoke": args.smoke, "sizes": sizes.__dict__, "seconds": total,
        "memory": "cuda max_memory_allocated above the baseline" if dev.cuda else
                  "private anonymous RSS above the baseline (RssAnon)",
        "torch": torch.__version__, "machine": machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "items": [r.__dict__ for r in results],
    }
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"gpu_check on {dev.name} ({str(dev.dtype).removeprefix('torch.')}; peak "
          f"{dev.peak_flops / 1e12:.3g} TFLOP/s, {dev.peak_source}); {total:.0f} s in all")
    print(table(results))
    print(f"wrote {args.out}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
