"""EDGE's cost at the real model sizes (random weights): one fine-tuning step and one sampled pair.

Each measurement runs in its own child process (``_common.run_child``) that builds the
full-size random-weight models of the ``random-paper`` presets (SD 1.5's VAE and UNet with a
CLIP-L-sized text encoder, CLIP ViT-B/32; ``gitd.models.fullsize``) and calls gitd's own code:

* ``finetune``: ``gitd.stages.finetune.Trainer.step`` on a batch of training pairs at 224 px
  (the paper's resolution; SGD on the UNet's bias/norm parameters, loss through the VAE decoder
  and CLIP). The first step runs under ``torch.utils.flop_counter`` (its FLOPs, forward and
  backward); the following ``--repeat`` steps are timed.
* ``sample``: ``gitd.stages.text2image.sample_images``: one 512 px image, 50 PNDM steps, CFG 7.5
  (UNet batch 2), the paper's sampling setting.

Peak memory is the child's private anonymous RSS above what it held before the measured part
(models included in "before"), sampled every 10 ms; ``peak_rss_mib`` is the whole child. The
baseline in the same run is the machine's dense matmul rate: "x floor" = seconds / (FLOPs / rate).
"CPU s" is the child's processor time over the timed part (``time.process_time``): on a machine
shared with other jobs, wall seconds stretch with the load, while CPU seconds / threads
approximates the wall time the same work takes on an idle machine.

    python benchmarks/bench_edge.py --threads 2                     # both, CPU
    python benchmarks/bench_edge.py --what finetune --batch 8 --checkpointing
    python benchmarks/bench_edge.py --device cuda --mixed-precision bf16 --batch 32  # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, machine, run_child, table  # noqa: E402

PROMPT = ("a small red circle above a large blue square and a green triangle on the left, on a "
          "grey background")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(device, dtype) -> float:
    import torch

    n = 4096 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device,
                                                                    dtype=dtype)
    a @ b
    _sync(device)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 3.0:
        a @ b
        done += 1
        _sync(device)
    return 2 * n ** 3 * done / (time.perf_counter() - t0)


def _flops(fn) -> tuple[float, object]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    return float(counter.get_total_flops()), out


def worker_finetune(args) -> dict:
    import torch

    from gitd.stages.finetune import FinetuneSettings, Trainer, build_edge_models
    from gitd.stages.finetune.objective import pair_seed
    from gitd.stages.finetune.train import make_accelerator

    s = FinetuneSettings.from_preset(
        "random-paper", device=args.device, batch_size=args.batch,
        mixed_precision=args.mixed_precision, gradient_checkpointing=args.checkpointing,
        gradient_accumulation_steps=args.accumulation)
    acc = make_accelerator(s)
    frozen = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(acc.mixed_precision,
                                                                    torch.float32)
    t0 = time.perf_counter()
    models = build_edge_models(s.diffusion_model, s.clip_model, device=acc.device,
                               frozen_dtype=frozen, seed=0)
    build_s = time.perf_counter() - t0
    trainer = Trainer(models, s, acc)
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(s.batch_size, 3, s.resolution, s.resolution, generator=g) * 2 - 1
    captions = [f"{PROMPT} number {i}" for i in range(s.batch_size)]
    micro = s.batch_size // s.gradient_accumulation_steps

    def step(k):
        parts = [(pixels[a:a + micro], captions[a:a + micro],
                  [pair_seed(k, 0, i) for i in range(a, a + micro)])
                 for a in range(0, s.batch_size, micro)]
        return trainer.step(parts)

    rate = _rate(acc.device, frozen)
    times, cpu = [], []
    with PeakMemory() as mem:
        flops, _ = _flops(lambda: step(0))
        for k in range(args.repeat):
            _sync(acc.device)
            t0, c0 = time.perf_counter(), time.process_time()
            step(k + 1)
            _sync(acc.device)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    out = {"what": "finetune", "batch": s.batch_size, "checkpointing": s.gradient_checkpointing,
           "accumulation": s.gradient_accumulation_steps, "mixed_precision": acc.mixed_precision,
           "seconds": times, "cpu_seconds": cpu, "flops": flops, "rate": rate,
           "build_s": build_s, "trainable": sum(p.numel() for p in trainer.params.values()),
           **mem.report()}
    if acc.device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def worker_sample(args) -> dict:
    import torch

    from gitd.models import build, resolve_device
    from gitd.stages.text2image import sample_images

    device = resolve_device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.mixed_precision,
                                                                 torch.float32)
    t0 = time.perf_counter()
    pipe = build("text2img", "random-sd15", device=device, dtype=dtype, seed=0)
    build_s = time.perf_counter() - t0
    res, steps = args.size, args.steps
    with torch.no_grad():
        text = pipe.encode_prompt(PROMPT, device, 1, True, None)
        cond = torch.cat([text[1], text[0]])
        x = torch.randn(2, 4, res // 8, res // 8, device=device, dtype=dtype)
        unet_flops, _ = _flops(lambda: pipe.unet(x, torch.tensor(500, device=device),
                                                 encoder_hidden_states=cond))
        decode_flops, _ = _flops(lambda: pipe.vae.decode(x[:1]))
    flops = steps * unet_flops + decode_flops
    rate = _rate(device, dtype)
    times, cpu = [], []
    with PeakMemory() as mem:
        for k in range(args.repeat):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            sample_images(pipe, [PROMPT], seeds=[k], guidance_scale=7.5,
                          num_inference_steps=steps, resolution=res)
            _sync(device)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    out = {"what": "sample", "size": res, "steps": steps, "seconds": times, "cpu_seconds": cpu,
           "flops": flops, "unet_flops": unet_flops, "rate": rate, "build_s": build_s,
           **mem.report()}
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--what", choices=["finetune", "sample", "all"], default="all")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8, help="fine-tuning pairs per step")
    ap.add_argument("--accumulation", type=int, default=1, help="micro-batches per step")
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    ap.add_argument("--size", type=int, default=512, help="sampled image side")
    ap.add_argument("--steps", type=int, default=50, help="sampling steps")
    ap.add_argument("--repeat", type=int, default=1, help="timed repetitions")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--worker", choices=["finetune", "sample"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        from gitd.log import setup_logging

        setup_logging(quiet=True)
        emit((worker_finetune if args.worker == "finetune" else worker_sample)(args))
        return 0
    raw = sys.argv[1:] if argv is None else argv
    rows, results = [], []
    for what in (["finetune", "sample"] if args.what == "all" else [args.what]):
        r = run_child([__file__, *raw, "--worker", what], args.timeout)
        results.append(r)
        if "error" in r:
            rows.append([what, r["error"], "", "", "", "", "", ""])
            continue
        sec = statistics.median(r["seconds"])
        floor = r["flops"] / r["rate"]
        label = (f"fine-tune step, batch {r['batch']} at 224 px"
                 + (", checkpointing" if r["checkpointing"] else "")
                 + (f", {r['accumulation']} micro-batches" if r["accumulation"] > 1 else "")
                 if what == "finetune" else
                 f"one sampled pair, {r['size']} px, {r['steps']} steps, CFG 7.5")
        rows.append([label, f"{sec:.1f}", f"{statistics.median(r['cpu_seconds']):.1f}",
                     f"{r['flops'] / 1e12:.2f}", f"{floor:.1f}", f"{sec / floor:.1f}",
                     f"{r['peak_private_mib']:.0f}", f"{r['peak_rss_mib']:.0f}"])
    print(f"machine: {machine()}; device {args.device}, mixed precision "
          f"{args.mixed_precision}, torch threads {args.threads or 'default'}")
    for r in results:
        if "rate" in r:
            print(f"{r['what']}: matmul rate {r['rate'] / 1e12:.3f} TFLOP/s; runs "
                  f"{[round(x, 1) for x in r['seconds']]} s; models built in "
                  f"{r['build_s']:.0f} s" + (f"; {r['trainable']:,} trainable parameters"
                                             if "trainable" in r else ""))
    print()
    print(table(["measurement", "seconds", "CPU s", "TFLOP", "floor s", "x floor",
                 "peak private MiB", "peak RSS MiB"], rows))
    print()
    print("json: " + json.dumps(results))
    print("reproduce: python benchmarks/bench_edge.py " + " ".join(raw))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
