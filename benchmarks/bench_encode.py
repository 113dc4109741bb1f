"""Benchmark the encode stage against a naive one-image-at-a-time loop.

Both encode the same shapes images (``gitd.data.shapes.make_shapes``, 128 px, cached under
--data-dir) with the same tiny SD-shaped VAE (``gitd.models.build_vae("tiny")`` when the
registry is there, else the same config built here: 4 blocks of 8/8/16/16 channels, latent
4 x 16 x 16 at 128 px) on the CPU, each in its own child process:

  stage   gitd.stages.encode.encode_latents: DataLoader workers open and preprocess, batches
          are encoded and written into a float16 .npy with per-batch progress
  naive   for each image: open, preprocess, vae.encode, append the float16 latent to a Python
          list; np.stack at the end and np.save

Peak memory is the highest anonymous memory above what the child held before the method
started, summed proportionally (Pss) over the child and its DataLoader workers; see _common.py.

Usage
  python benchmarks/bench_encode.py --n 2000 20000
  python benchmarks/bench_encode.py --quick          # n = 500
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, fmt, machine, run_child, table  # noqa: E402

METHODS = ("stage", "naive")


def images(data_dir: Path, n: int, size: int) -> Path:
    from gitd.data.shapes import make_shapes
    out = data_dir / f"shapes-{size}px-{n}"
    if not (out / "train.json").exists():
        make_shapes(out, train=n, test=1, size=size)
    return out


def build_vae(seed: int = 0):
    import torch
    try:
        from gitd.models import build_vae as registry_vae
    except ImportError:
        registry_vae = None
    if registry_vae is not None:
        return registry_vae("tiny", device="cpu", dtype=torch.float32, seed=seed), "gitd.models"
    from diffusers import AutoencoderKL
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
        sample_size=64, scaling_factor=0.18215).eval(), "local config"


def worker(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    from gitd.data import load_dataset
    from gitd.data.images import open_rgb
    from gitd.stages.encode import encode_latents
    from gitd.stages.vae_encoding import preprocess

    folder = Path(args.data)
    records = load_dataset(folder / "train.json", folder).records
    vae, source = build_vae()
    vae.eval().requires_grad_(False)
    out = Path(tempfile.mkdtemp(prefix="gitd-bench-encode-", dir=args.tmp))
    try:
        with PeakMemory(interval=0.05, children=True) as mem:
            t0 = time.perf_counter()
            if args.worker == "stage":
                encode_latents(records, vae, out, resolution=args.resolution,
                               batch_size=args.batch_size, num_workers=args.workers)
            else:
                lat = []
                with torch.inference_mode():
                    for r in records:
                        x = preprocess(open_rgb(r.image), args.resolution)[None]
                        z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
                        lat.append(z[0].numpy().astype(np.float16))
                np.save(out / "latents.npy", np.stack(lat))
            seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    emit({"seconds": seconds, "images_per_s": len(records) / seconds, "vae": source,
          **mem.report()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--quick", action="store_true", help="n = 500 only")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--size", type=int, default=128, help="shapes image side")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="stage DataLoader workers")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is shown")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/gitd-bench-data"))
    p.add_argument("--tmp", default=None, help="where the outputs are written (then deleted)")
    p.add_argument("--json", type=Path)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.n = [500]

    rows, results = [], []
    vae_source = None
    for n in args.n:
        folder = images(args.data_dir, n, args.size)
        for m in args.methods:
            runs = []
            for r in range(args.repeat):
                child = [__file__, "--worker", m, "--data", str(folder),
                         "--resolution", str(args.resolution), "--batch-size",
                         str(args.batch_size), "--workers", str(args.workers),
                         "--threads", str(args.threads)]
                if args.tmp:
                    child += ["--tmp", args.tmp]
                res = run_child(child, args.timeout)
                print(f"n={n} {m} run {r + 1}: {json.dumps(res)}", file=sys.stderr, flush=True)
                runs.append(res)
                if "error" in res:
                    break
            ok = [x for x in runs if "error" not in x]
            if not ok:
                rows.append([n, m, runs[-1]["error"], "-", "-", "-"])
                continue
            vae_source = ok[0]["vae"]
            med = {k: float(np.median([x[k] for x in ok])) for k in ok[0] if k != "vae"}
            results.append({"n": n, "method": m, "runs": len(ok), **med})
            rows.append([n, m, fmt(med["images_per_s"]), fmt(med["seconds"]),
                         fmt(med["peak_private_mib"], ".0f"), fmt(med["peak_rss_mib"], ".0f")])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(table(["n", "method", "images/s", "time s", "peak private MiB", "peak RSS MiB (main)"],
                rows))
    print()
    print(f"machine: {machine()}; VAE: tiny ({vae_source}); runs per cell: {args.repeat} "
          f"(median); stage batch {args.batch_size}, {args.workers} workers")
    cmd = [Path(sys.executable).name, "benchmarks/bench_encode.py",
           *(sys.argv[1:] if argv is None else argv)]
    print("reproduce: " + " ".join(shlex.quote(c) for c in cmd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
