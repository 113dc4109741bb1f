"""CC3M-scale benchmarks: encode plain vs Ray, and CLARA streamed from shards vs in memory.

encode   The encode stage on WebDataset shards of the stand-in images (JPEG, 256 px, written by
         ``webdataset.ShardWriter``), each method in its own child process:
           plain   gitd.stages.encode.encode_latents (DataLoader workers decode, torch threads)
           ray-W   gitd.stages.ray_encode.encode_latents_ray with W encoder actors on a fresh
                   local Ray (``ray.init(num_cpus=<cores>)``, started inside the child; its start
                   is reported apart as ``init s``)
         with the tiny VAE (tiny-sd, 64 px) and the full-size random SD 1.5 VAE (random-sd15,
         ``--full-resolution`` px). Every Ray run's latents are compared byte for byte with the
         plain run's.
clara    CLARA k-medoids of n x d float16 rows (a 300-centre Gaussian mixture, as
         bench_cluster.py) written as .npy shards of --shard-rows rows under --data-dir:
           stream  clara(ShardedRows(shards)): rows read by pread, a chunk at a time
           memory  clara(one float16 array holding every row in RAM)
         Same seed, so the medoids and the cost must be identical; the table says whether they
         are. The data is deleted afterwards unless --keep.

Usage
  python benchmarks/bench_scale.py encode --n 400 --small-n 16 --repeat 3
  python benchmarks/bench_scale.py clara --n 1000000 3000000 --d 1024 --k 100 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, fmt, machine, reproduce, run_child, table  # noqa: E402

CENTRES = 300


# --------------------------------------------------------------------------------------------
# data

def image_shards(data_dir: Path, n: int, size: int = 256) -> Path:
    """n stand-in images as JPEG members of WebDataset shards (1,000 samples a shard)."""
    import io

    import webdataset as wds
    from PIL import Image

    out = data_dir / f"shapes-shards-{size}px-{n}"
    if (out / "DONE").exists():
        return out
    from gitd.data import load_dataset
    from gitd.data.shapes import make_shapes
    src = data_dir / f"shapes-{size}px-{n}"
    if not (src / "train.json").exists():
        make_shapes(src, train=n, test=1, size=size)
    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / "%05d.tar"), maxcount=1000, verbose=0) as sink:
        for i, rec in enumerate(load_dataset(src / "train.json")):
            buf = io.BytesIO()
            Image.open(rec.image).convert("RGB").save(buf, format="JPEG", quality=90)
            sink.write({"__key__": f"{i:09d}", "jpg": buf.getvalue(), "txt": rec.captions[0]})
    (out / "DONE").write_text("ok\n")
    return out


def latent_shards(data_dir: Path, n: int, d: int, rows: int, seed: int = 0) -> list[Path]:
    """n x d float16 mixture rows as .npy shards of ``rows`` rows (never n x d in RAM)."""
    out = data_dir / f"mixture-n{n}-d{d}-r{rows}-s{seed}"
    files = [out / f"{s:05d}.npy" for s in range(-(-n // rows))]
    if (out / "DONE").exists():
        return files
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, d), dtype=np.float32)
    weights = rng.dirichlet(np.full(CENTRES, 2.0))
    for s, f in enumerate(files):
        m = min(rows, n - s * rows)
        which = rng.choice(CENTRES, size=m, p=weights)
        block = rng.standard_normal((m, d), dtype=np.float32)
        block *= 0.5
        block += centres[which]
        np.save(f, block.astype(np.float16))
    (out / "DONE").write_text("ok\n")
    return files


# --------------------------------------------------------------------------------------------
# children

def encode_worker(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    from gitd.data import load_dataset
    from gitd.models import build_vae
    from gitd.stages.encode import encode_latents
    from gitd.stages.latent_folder import LatentStore

    records = load_dataset(args.data).records[: args.n]
    vae = build_vae(args.vae, device="cpu", dtype=torch.float32, seed=0).eval()
    out = Path(tempfile.mkdtemp(prefix="gitd-bench-scale-", dir=args.tmp))
    init = 0.0
    try:
        with PeakMemory(interval=0.05, children=True) as mem:
            t0 = time.perf_counter()
            if args.worker == "plain":
                store = encode_latents(records, vae, out, resolution=args.resolution,
                                       batch_size=args.batch_size, num_workers=args.workers)
            else:
                import ray

                from gitd.stages.ray_encode import encode_latents_ray
                ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
                init = time.perf_counter() - t0
                store = encode_latents_ray(records, vae, out, resolution=args.resolution,
                                           batch_size=args.batch_size,
                                           workers=int(args.worker.split("-")[1]))
            seconds = time.perf_counter() - t0
        lat = np.asarray(store.latents[:])
        same = None
        if args.reference:
            ref = LatentStore.open(args.reference).latents
            same = bool(np.asarray(ref).tobytes() == lat.tobytes())
        if args.keep_as:
            shutil.copytree(out, args.keep_as, dirs_exist_ok=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    emit({"seconds": seconds, "init_s": init, "images_per_s": len(records) / (seconds - init),
          "same_as_plain": same, **mem.report()})


def clara_worker(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    from gitd.stages.arrays import ShardedRows
    from gitd.stages.clara import clara

    files = [Path(f) for f in json.loads(args.files)]
    with PeakMemory(interval=0.02) as mem:
        t0 = time.perf_counter()
        if args.worker == "memory":
            # Filled shard by shard: never the shards and their concatenation at once.
            S = ShardedRows(files)
            X = np.empty(S.shape, dtype=S.dtype)
            for a in range(0, len(S), 65536):
                X[a:a + 65536] = S[a:a + 65536]
        else:
            X = ShardedRows(files)
        load = time.perf_counter() - t0
        res = clara(X, args.k, seed=args.seed, device="cpu")
        seconds = time.perf_counter() - t0
    emit({"seconds": seconds, "load_s": load, "cost": res.cost,
          "medoids": res.medoids.tolist(), **mem.report()})


# --------------------------------------------------------------------------------------------
# grids

def median(runs: list[dict], key: str):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return float(np.median(vals)) if vals else None


def run_encode(args) -> list[str]:
    lines = []
    data = image_shards(args.data_dir, max(args.n + args.small_n))
    rows, results = [], []
    vaes = [v for v in [("tiny-sd", 64), ("random-sd15", args.full_resolution)]
            if v[0] in args.vaes]
    for vae, res in vaes:
        # Ray's fixed overhead is measured once, with the tiny VAE, at --small-n.
        sizes = args.n + args.small_n if vae == "tiny-sd" else args.full_n
        for n in sorted(set(sizes)):
            ref_dir = Path(tempfile.mkdtemp(prefix="gitd-bench-ref-", dir=args.tmp))
            for method in ["plain", *[f"ray-{w}" for w in args.ray_workers]]:
                runs = []
                for r in range(args.repeat):
                    child = [__file__, "encode", "--worker", method, "--data", str(data),
                             "--n", str(n), "--vae", vae, "--resolution", str(res),
                             "--batch-size", str(args.batch_size), "--workers",
                             str(args.workers), "--threads", str(args.threads)]
                    if args.tmp:
                        child += ["--tmp", args.tmp]
                    if method == "plain" and r == 0:
                        child += ["--keep-as", str(ref_dir)]
                    elif method != "plain":
                        child += ["--reference", str(ref_dir)]
                    res_ = run_child(child, args.timeout)
                    print(f"encode {vae} n={n} {method} run {r + 1}: {json.dumps(res_)}",
                          file=sys.stderr, flush=True)
                    runs.append(res_)
                    if "error" in res_:
                        break
                ok = [x for x in runs if "error" not in x]
                if not ok:
                    rows.append([vae, res, n, method, runs[-1]["error"], "-", "-", "-", "-", "-"])
                    continue
                med = {k: median(ok, k) for k in ("seconds", "init_s", "images_per_s",
                                                   "peak_private_mib", "peak_rss_mib")}
                same = {x.get("same_as_plain") for x in ok}
                results.append({"vae": vae, "resolution": res, "n": n, "method": method,
                                "runs": len(ok), "same_as_plain": sorted(same, key=str), **med})
                rows.append([vae, res, n, method, len(ok), fmt(med["seconds"]),
                             fmt(med["init_s"]), fmt(med["images_per_s"], ".2f"),
                             fmt(med["peak_private_mib"], ".0f"),
                             "-" if same == {None} else ("yes" if same == {True} else "NO")])
            shutil.rmtree(ref_dir, ignore_errors=True)
    lines.append(table(["VAE", "px", "n", "method", "runs", "total s (median)", "ray init s",
                        "images/s (excl. init)", "peak private MiB", "bytes = plain"], rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return lines


def run_clara(args) -> list[str]:
    rows, results = [], []
    for n in args.n:
        files = latent_shards(args.data_dir, n, args.d, args.shard_rows, args.seed)
        # Methods alternate within each repeat, so that a change in the machine's load
        # falls on both rather than on whichever ran last.
        methods = [m for m in args.methods
                   if not (m == "memory" and n * args.d * 2 > args.memory_max_bytes)]
        cell = {m: [] for m in methods}
        for r in range(args.repeat):
            for method in methods:
                if cell[method] and "error" in cell[method][-1]:
                    continue
                res = run_child([__file__, "clara", "--worker", method, "--files",
                                 json.dumps([str(f) for f in files]), "--k", str(args.k[0]),
                                 "--seed", str(args.seed + r), "--threads", str(args.threads)],
                                args.timeout)
                print(f"clara n={n} {method} run {r + 1}: "
                      f"{json.dumps({k: v for k, v in res.items() if k != 'medoids'})}",
                      file=sys.stderr, flush=True)
                cell[method].append(res)
        ref = {r["cost"]: r["medoids"] for r in cell.get("memory", []) if "error" not in r}
        for method, runs in cell.items():
            ok = [x for x in runs if "error" not in x]
            if not ok:
                rows.append([n, args.d, args.k[0], method, runs[-1]["error"]] + ["-"] * 6)
                continue
            med = {k: median(ok, k) for k in ("seconds", "load_s", "cost", "peak_private_mib",
                                               "peak_rss_mib")}
            same = "-"
            if method != "memory" and ref:
                mem_runs = [x for x in cell["memory"] if "error" not in x]
                same = "yes" if all(a["medoids"] == b["medoids"] and a["cost"] == b["cost"]
                                    for a, b in zip(ok, mem_runs)) else "NO"
            ratio = "-"
            if method != "memory" and cell.get("memory"):
                mcost = median([x for x in cell["memory"] if "error" not in x], "cost")
                ratio = fmt(med["cost"] / mcost, ".6f") if mcost else "-"
            results.append({"n": n, "d": args.d, "k": args.k[0], "method": method,
                            "runs": len(ok), "same_as_memory": same, **med})
            rows.append([f"{n:,}", args.d, args.k[0], method, len(ok), fmt(med["seconds"]),
                         fmt(med["load_s"]), fmt(med["peak_private_mib"], ".0f"),
                         fmt(med["peak_rss_mib"], ".0f"), fmt(med["cost"], ".6g"), ratio, same])
        if not args.keep:
            shutil.rmtree(files[0].parent, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return [table(["n", "d", "k", "method", "runs", "time s (median)", "load s",
                   "peak private MiB", "peak RSS MiB", "cost (median)", "cost / memory",
                   "medoids = memory"], rows)]


def run_flops(args) -> list[str]:
    """FLOPs of one image through the full-size SD VAE encoder (torch's FlopCounterMode: every
    matmul and convolution, 2 FLOPs per multiply-add), the basis of the GPU estimates."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gitd.models import build_vae
    torch.set_num_threads(args.threads)
    vae = build_vae("random-sd15", device="cpu", dtype=torch.float32, seed=0).eval()
    rows = []
    for res in args.resolution:
        x = torch.zeros(1, 3, res, res)
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            vae.encode(x)
        rows.append([res, f"{fc.get_total_flops() / 1e9:.1f}"])
    out = [table(["px", "GFLOP per image (SD VAE encoder)"], rows), ""]
    # CPU side: one 640 x 480 JPEG (CC3M's typical size; a noisy photo-like image, quality 90)
    # opened through gitd's guard, resized and centre-cropped, as a Ray decode task does.
    import io
    import tempfile

    from PIL import Image

    from gitd.data.images import load_pixels
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 640)[None, :, None] * np.ones((480, 1, 3))
    img = np.clip(base + rng.normal(0, 40, (480, 640, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    path = Path(tempfile.mkstemp(suffix=".jpg")[1])
    path.write_bytes(buf.getvalue())
    rows = []
    for res in args.resolution:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(50):
                load_pixels(path, res)
            times.append((time.perf_counter() - t0) / 50)
        rows.append([res, f"{len(buf.getvalue()) / 1024:.0f} KiB", f"{np.median(times) * 1e3:.1f}"])
    path.unlink()
    out.append(table(["px", "JPEG size", "decode + resize + crop, ms per image (1 core, median "
                      "of 5 x 50)"], rows))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--n", type=int, nargs="+", default=[400])
    e.add_argument("--small-n", type=int, nargs="+", default=[16])
    e.add_argument("--full-n", type=int, nargs="+", default=[48])
    e.add_argument("--full-resolution", type=int, default=256)
    e.add_argument("--vaes", nargs="+", default=["tiny-sd", "random-sd15"],
                   choices=["tiny-sd", "random-sd15"])
    e.add_argument("--ray-workers", type=int, nargs="+", default=[1, 2])
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--workers", type=int, default=2, help="plain: DataLoader workers")
    e.add_argument("--vae", default="tiny-sd", help=argparse.SUPPRESS)
    e.add_argument("--resolution", type=int, default=64, help=argparse.SUPPRESS)
    e.add_argument("--reference", help=argparse.SUPPRESS)
    e.add_argument("--keep-as", help=argparse.SUPPRESS)
    e.add_argument("--tmp", default=None)
    f = sub.add_parser("flops")
    f.add_argument("--resolution", type=int, nargs="+", default=[256, 512])
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--worker", help=argparse.SUPPRESS)
    c = sub.add_parser("clara")
    c.add_argument("--n", type=int, nargs="+", default=[1_000_000, 3_000_000])
    c.add_argument("--d", type=int, default=1024)
    c.add_argument("--k", type=int, nargs="+", default=[100])
    c.add_argument("--shard-rows", type=int, default=65536)
    c.add_argument("--methods", nargs="+", default=["stream", "memory"])
    c.add_argument("--memory-max-bytes", type=float, default=8e9,
                   help="run the in-memory method only while the data is at most this big")
    c.add_argument("--keep", action="store_true", help="keep the generated shards")
    c.add_argument("--files", help=argparse.SUPPRESS)
    for q in (e, c):
        q.add_argument("--repeat", type=int, default=3, help="runs per cell; medians shown")
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--timeout", type=float, default=3600)
        q.add_argument("--data-dir", type=Path, default=Path("runs/bench-scale"))
        q.add_argument("--json", type=Path)
        q.add_argument("--worker", help=argparse.SUPPRESS)
        q.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        if args.what == "encode":
            args.n = args.n[0]
            encode_worker(args)
        else:
            args.k = args.k[0]
            clara_worker(args)
        return 0
    print(f"machine: {machine()}", file=sys.stderr)
    t0 = time.time()
    lines = {"encode": run_encode, "clara": run_clara, "flops": run_flops}[args.what](args)
    print("\n".join(lines))
    print()
    print(f"machine: {machine()}; runs per cell: {getattr(args, 'repeat', 1)} (median); "
          f"wall {time.time() - t0:.0f} s")
    print(reproduce("bench_scale.py", argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
