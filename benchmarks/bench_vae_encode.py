"""Encode throughput of TAESD against the full-size SD 1.x VAE encoder, per image size.

Both encoders run through gitd's own latent function (``gitd.stages.vae_encoding.vae_latents``, what
the encode stage calls per batch) on the same input batch, in one process:

  taesd   AutoencoderTiny (TAESD for SD 1.x, 1.2M encoder parameters): the real weights from
          --taesd / $GITD_TAESD, else the same architecture with random weights (same FLOPs)
  sd-vae  SD 1.5's AutoencoderKL (``random-sd15`` from gitd.models.fullsize: 34M encoder
          parameters, random weights cost the same FLOPs as the real ones)

The timed runs are interleaved (taesd then sd-vae, then sd-vae then taesd, ...), so load from
other processes falls on both, and each repeat gives one ratio; the table shows medians. FLOPs
per image are counted once with ``torch.utils.flop_counter``. CPU time (``process_time``, all
threads) is recorded beside wall time: on a machine shared with other jobs it is the steadier
of the two, since waiting for a core costs wall time only. Inputs are a fixed random batch
in [-1, 1]: a convolutional encoder's cost does not depend on the pixels.

    python benchmarks/bench_vae_encode.py --resolutions 256 512 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, machine, table  # noqa: E402


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def build_encoders(taesd: str | None, device, dtype):
    import torch
    from diffusers import AutoencoderTiny

    from gitd.models import build_vae

    if taesd:
        tiny, source = build_vae(taesd, device=device, dtype=dtype, standalone=True), "real"
    else:
        torch.manual_seed(0)
        tiny, source = AutoencoderTiny().to(device, dtype).eval(), "random weights"
    sd = build_vae("random-sd15", device=device, dtype=dtype, seed=0)
    return {"taesd": tiny, "sd-vae": sd}, source


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batch", type=int, default=1, help="images per encode call")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per encoder and size")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--taesd", default=os.environ.get("GITD_TAESD") or None,
                    help="TAESD (SD 1.x) weights folder (default $GITD_TAESD; random weights "
                         "of the same architecture without it)")
    ap.add_argument("--json", type=Path, help="write the measurements here")
    args = ap.parse_args(argv)

    import torch

    from gitd.models import resolve_device
    from gitd.stages.vae_encoding import vae_latents

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    encoders, taesd_source = build_encoders(args.taesd, device, dtype)
    params = {name: sum(p.numel() for p in vae.encoder.parameters())
              for name, vae in encoders.items()}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def encode(vae, x):
        with torch.inference_mode():
            vae_latents(vae, x)
        sync()

    load_before = os.getloadavg()
    results, rows = [], []
    for res in args.resolutions:
        gen = torch.Generator().manual_seed(res)
        x = (torch.rand(args.batch, 3, res, res, generator=gen) * 2 - 1).to(device, dtype)
        flops = {}
        for name, vae in encoders.items():
            # Counting FLOPs runs the encoder once; it is also the warm-up (allocator, kernels).
            flops[name] = count_flops(lambda: encode(vae, x[:1]))
        times: dict[str, list[float]] = {name: [] for name in encoders}
        cpu: dict[str, list[float]] = {name: [] for name in encoders}
        for r in range(args.repeat):
            order = list(encoders) if r % 2 == 0 else list(reversed(encoders))
            for name in order:
                c0, t0 = time.process_time(), time.perf_counter()
                encode(encoders[name], x)
                times[name].append((time.perf_counter() - t0) / args.batch)
                cpu[name].append((time.process_time() - c0) / args.batch)
            print(f"{res} px repeat {r + 1}: " + ", ".join(
                f"{n} {times[n][-1]:.3f} s/image ({cpu[n][-1]:.3f} CPU s)" for n in encoders),
                file=sys.stderr, flush=True)
        ratios = [sd / tiny for sd, tiny in zip(times["sd-vae"], times["taesd"])]
        cpu_ratio = statistics.median(cpu["sd-vae"]) / statistics.median(cpu["taesd"])
        for name in encoders:
            med = statistics.median(times[name])
            results.append({"resolution": res, "encoder": name, "params": params[name],
                            "gflop_per_image": flops[name] / 1e9, "seconds_per_image": times[name],
                            "cpu_seconds_per_image": cpu[name], "median_s": med,
                            "median_cpu_s": statistics.median(cpu[name]), "images_per_s": 1 / med})
            rows.append([res, name, f"{params[name] / 1e6:.2f}M", fmt(flops[name] / 1e9, ".0f"),
                         args.repeat, fmt(med, ".3f"),
                         f"{min(times[name]):.3f}-{max(times[name]):.3f}", fmt(1 / med, ".2f"),
                         fmt(statistics.median(cpu[name]), ".3f"),
                         "-" if name == "taesd" else
                         f"**{statistics.median(ratios):.1f}x** "
                         f"({min(ratios):.1f}-{max(ratios):.1f}); CPU time {cpu_ratio:.1f}x; "
                         f"FLOPs {flops['sd-vae'] / flops['taesd']:.1f}x"])
    load_after = os.getloadavg()
    print(table(["px", "encoder", "encoder params", "GFLOP/image", "runs", "median s/image",
                 "range s/image", "images/s", "median CPU s/image",
                 "TAESD speed-up: wall (median of per-repeat ratios, range); CPU; FLOPs"], rows))
    print()
    print(f"machine: {machine()}; device {device}, {args.dtype}, {args.threads} torch threads, "
          f"batch {args.batch}; TAESD weights: {taesd_source}; load average (1/5/15 min) "
          f"{'/'.join(f'{v:.1f}' for v in load_before)} before, "
          f"{'/'.join(f'{v:.1f}' for v in load_after)} after")
    cmd = [Path(sys.executable).name, "benchmarks/bench_vae_encode.py",
           *(sys.argv[1:] if argv is None else argv)]
    print("reproduce: " + " ".join(shlex.quote(c) for c in cmd))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "load_before": load_before,
                                         "load_after": load_after}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
