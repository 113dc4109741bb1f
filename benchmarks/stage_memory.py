"""Peak memory of each stage of the ``random-paper`` distill runs, on the CPU, for docs/models.md.

Each method runs ``gitd.methods.distill`` once, in its own child process, with the full-size
random-weight models of its ``random-paper`` preset (``gitd.models.fullsize``,
``gitd.models.fullsize_unclip``) in float32 on the CPU, at the preset's resolution and batch
sizes, on ``--images`` stand-in images, ``--pairs`` pairs. The scheduler runs ``--steps`` steps
instead of the preset's 50-100: a stage's peak is one denoising step's (the same at every step),
so fewer steps change the time, not the peak.

A thread samples the child's private anonymous memory (``RssAnon``) every 20 ms. A stage runs
from the plan's executor calling it (``gitd.plan.StageCall``: its models are built in it, and
released after it when no later stage needs them) to the next stage's call. The stages are
named as the plans name them (``img2img``, ``unclip``, ``text2img``, ...). Per stage the table
gives

* *peak MiB*: the highest ``RssAnon`` during the stage minus what the child held before the
  run (interpreter, torch, the dataset), i.e. the models held then plus the stage's activations;
* *models*: the roles built for the stage and their parameter bytes in float16 (what a GPU
  run in fp16 holds), counted from the built models (``gitd.models.offload.module_bytes``).

``finetune`` (``--methods finetune``) measures ``gitd finetune --preset random-paper``'s
gradient pass instead (forward with gradients and backward through VAE decoder, UNet and CLIP,
as ``Trainer.probe_peak``): on 1 pair and on 2 pairs (224 px, float32), each in its own child,
each peak above what the child held with the models built; the difference is one pair's
memory, the first less that is the fixed part (what ``--micro-batch auto`` measures on a GPU).

    python benchmarks/stage_memory.py --threads 2          # gitd, pds and edge
    python benchmarks/stage_memory.py --methods gitd --images 16
    python benchmarks/stage_memory.py --methods finetune
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import _status_kib, emit, fmt, machine, run_child, table  # noqa: E402


def worker(method: str, images: int, pairs: int, steps: int, work: Path) -> dict:
    import torch

    from gitd.config import make_config
    from gitd.data.shapes import make_shapes
    from gitd.methods import distill
    from gitd.models import offload
    from gitd.models.roles import Models
    from gitd.plan import StageCall

    s = make_config("random-paper", method=method, pairs=pairs, seed=0, device="cpu",
                    num_inference_steps=steps, **({"encode_workers": 0}
                                                  if method != "pds" else {}))
    make_shapes(work / "data", train=images, test=1, size=s.resolution, seed=0, workers=1)
    data = work / "data" / "train.json"

    events: list[tuple[float, str]] = []
    built: dict[str, dict] = {}
    start_call, real_get = StageCall.__init__, Models.get

    def traced_call(self, runner, entry):
        # The executor makes one StageCall per entry, right before running it.
        events.append((time.perf_counter(), entry.name))
        start_call(self, runner, entry)

    def traced_get(self, role):
        new = role not in self.built()
        model = real_get(self, role)
        if new:
            parts = offload.components(model)
            fp16 = sum(p.numel() * 2 for part in parts for p in part.parameters())
            built[role] = {"stage": events[-1][1] if events else None,
                           "fp16_mib": fp16 / 2**20}
        return model

    StageCall.__init__, Models.get = traced_call, traced_get
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.perf_counter(), _status_kib("RssAnon")))
            time.sleep(0.02)

    base = _status_kib("RssAnon")
    thread = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    thread.start()
    try:
        distill(data, work / "out", s)
    finally:
        stop.set()
        thread.join()
    end = time.perf_counter()
    stages = []
    for i, (start, name) in enumerate(events):
        stop_at = events[i + 1][0] if i + 1 < len(events) else end
        inside = [kib for t, kib in samples if start <= t <= stop_at]
        peak = max(inside, default=base)
        stages.append({"stage": name, "seconds": round(stop_at - start, 1),
                       "peak_mib": (peak - base) / 1024,
                       "models": {r: b["fp16_mib"] for r, b in built.items()
                                  if b["stage"] == name}})
    return {"method": method, "stages": stages, "baseline_mib": base / 1024,
            "seconds": round(end - t0, 1), "threads": torch.get_num_threads(),
            "settings": {"resolution": s.resolution, "pairs": pairs, "images": images,
                         "steps": steps}}


def finetune_worker(n: int) -> dict:
    import tempfile

    import torch

    from gitd.data import load_dataset
    from gitd.data.images import open_rgb
    from gitd.data.shapes import make_shapes
    from gitd.stages.vae_encoding import preprocess
    from gitd.stages.finetune import FinetuneSettings, Trainer, build_edge_models
    from gitd.stages.finetune.objective import image_features, pair_seed, sd_text_states
    from gitd.stages.finetune.train import make_accelerator

    s = FinetuneSettings.from_preset("random-paper", device="cpu")
    models = build_edge_models(s.diffusion_model, s.clip_model, device="cpu",
                               frozen_dtype=torch.float32, seed=0)
    trainer = Trainer(models, s, make_accelerator(s))
    with tempfile.TemporaryDirectory() as tmp:
        make_shapes(tmp, train=1, test=1, size=s.resolution, seed=0, workers=1)
        rec = load_dataset(Path(tmp) / "train.json").records[0]
        pixels = preprocess(open_rgb(rec.image), s.resolution)[None].repeat(2, 1, 1, 1)
    caps = [rec.captions[0], rec.captions[1]]
    seeds = [pair_seed(0, 0, 0), pair_seed(0, 0, 1)]
    # Freed memory the C allocator keeps would be reused by the pass and hide its peak: give it
    # back first (glibc's malloc_trim), and measure one pass per child.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base, peak = _status_kib("RssAnon"), [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _status_kib("RssAnon"))
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    # The gradient pass of one micro-batch, as Trainer.probe_peak runs it on a GPU.
    states = sd_text_states(models, caps[:n])
    feats, mse = image_features(models, pixels[:n], states, trainer._noise(seeds[:n]))
    (feats.sum() + mse.sum()).backward()
    stop.set()
    thread.join()
    peaks = {n: {"peak_mib": (max(peak[0], _status_kib("RssAnon")) - base) / 1024,
                 "seconds": round(time.perf_counter() - t0, 1)}}
    fp16 = sum(p.numel() * 2 for m in (models.unet, models.vae, models.text_encoder,
                                       models.clip.model) for p in m.parameters())
    return {"method": "finetune", "passes": peaks, "models_fp16_mib": fp16 / 2**20,
            "threads": torch.get_num_threads(), "settings": {"resolution": s.resolution}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="*", default=["gitd", "pds", "edge"])
    ap.add_argument("--images", type=int, default=16, help="stand-in images (GITD encodes "
                    "them in batches of 16, its preset's)")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="scheduler steps (the peak is one "
                    "step's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        if args.worker[0].startswith("finetune:"):
            emit(finetune_worker(int(args.worker[0].split(":")[1])))
        else:
            emit(worker(args.worker[0], args.images, args.pairs, args.steps,
                        Path(args.worker[1])))
        return
    import tempfile

    results = []
    methods = [m for m in args.methods if m != "finetune"]
    if "finetune" in args.methods:
        methods += ["finetune:1", "finetune:2"]
    for method in methods:
        with tempfile.TemporaryDirectory(prefix="gitd-mem-") as tmp:
            results.append(run_child([__file__, "--worker", method, tmp, "--images",
                                      str(args.images), "--pairs", str(args.pairs), "--steps",
                                      str(args.steps), "--threads", str(args.threads)],
                                     args.timeout))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    rows = []
    for res in results:
        if "error" in res:
            rows.append([res.get("method", "?"), "-", "-", "-", res["error"]])
            continue
        if res["method"] == "finetune":
            for n, p in res["passes"].items():
                rows.append(["finetune", f"gradient pass, {n} pair(s)", fmt(p["peak_mib"], ".0f"),
                             fmt(p["seconds"], ".0f"),
                             f"all {res['models_fp16_mib'] / 1024:.2f} GiB"])
            continue
        for st in res["stages"]:
            models = ", ".join(f"{r} {m / 1024:.2f} GiB" for r, m in st["models"].items())
            rows.append([res["method"], st["stage"], fmt(st["peak_mib"], ".0f"),
                         fmt(st["seconds"], ".0f"), models or "-"])
    print(f"Machine: {machine()}; {args.threads} threads; float32 on the CPU")
    print(table(["method", "stage", "peak MiB above baseline", "seconds", "models built "
                 "(fp16 parameter bytes)"], rows))
    print(f"\n    python benchmarks/stage_memory.py {' '.join(argv or sys.argv[1:])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
