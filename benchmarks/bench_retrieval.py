"""Retrieval results of every selection/distillation method on the stand-in dataset.

Writes the stand-in (`gitd shapes`), builds each method's training set at each size, trains the
retrieval model on it with `gitd evaluate` (same protocol and encoders for every row, several
seeds, last epoch reported) and writes a markdown table to docs/results.md. Resumable: a
configuration whose results.json exists is not run again.

    python benchmarks/bench_retrieval.py                       # the table in docs/results.md
    python benchmarks/bench_retrieval.py --sizes 50 --methods random --seeds 1   # a quick look

The clara-taesd rows cluster real SD 1.x latents from TAESD weights, found through --taesd or
the GITD_TAESD environment variable (a folder in the layout of madebyollin/taesd); without
them those rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "r_mean")
NOTES_MARKER = "<!-- notes: kept when the table is regenerated -->"
ALL_METHODS = ("random", "herding", "kcenter", "forgetting", "forgetting-train-set", "clara",
               "clara-taesd", "clara-taesd-128", "clara-features", "pds-select")
# GITD's selection step alone (``gitd distill --preset tiny --no-diffusion --no-captioner``):
# CLARA medoids, each with its longest caption, in the space each row names.
CLARA = {"clara": {},  # the tiny preset's random-weight VAE at 64 px: a random projection
         "clara-taesd": {"vae": "TAESD"},  # real SD 1.x latents at the preset's 64 px
         "clara-taesd-128": {"vae": "TAESD", "resolution": 128},  # at the images' own size
         "clara-features": {"cluster_space": "features"}}
SELECT = {"random": {}, "herding": {}, "kcenter": {}, "pds-select": {"method": "pds"},
          "forgetting": {"forgetting_learned": "batch"},
          "forgetting-train-set": {"method": "forgetting", "forgetting_learned": "train-set"}}


def build_set(method: str, k: int, data: Path, out: Path, args) -> bool:
    """Write the training set of ``method`` with ``k`` pairs to ``out``; False if unavailable."""
    from gitd.config import make_config
    from gitd.methods import distill
    from gitd.methods.coreset import select_coreset

    if (out / "annotations.json").exists():
        return True
    common = dict(image_size=args.image_size, cache=args.cache, device="cpu")
    if method in SELECT:
        kw = dict(SELECT[method])
        select_coreset(data, kw.pop("method", method), k, out, seed=0,
                       forgetting_epochs=args.forgetting_epochs, **kw, **common)
    elif method in CLARA:
        kw = dict(CLARA[method])
        if kw.get("vae") == "TAESD":
            if not args.taesd:
                return False
            kw["vae"] = str(args.taesd)
        if kw.get("cluster_space") == "features":
            kw["feature_image_size"] = args.image_size  # herding's and k-center's features
        distill(data, out, make_config("tiny", pairs=k, seed=0, device="cpu",
                                       diffusion=False, captioner_on=False, **kw))
    else:
        raise SystemExit(f"unknown method {method}")
    return True


def run_eval(train: Path | str, test: Path, out: Path, epochs: int, args) -> dict:
    from gitd.evaluation.evaluate import evaluate

    if out.exists():
        return json.loads(out.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)  # evaluate writes only into a folder that exists
    return evaluate(train, test, epochs=epochs, seeds=args.seeds, freeze_image=args.freeze_image,
                    image_size=args.image_size, cache=args.cache, device="cpu", out=out,
                    protocol=args.protocol)


def fmt(summary: dict, key: str) -> str:
    m = summary[key]
    return f"{m['mean']:.1f} ± {m['std']:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-retrieval")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--size", type=int, default=128, help="stand-in image size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--protocol", default="gitd")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--freeze-image", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--forgetting-epochs", type=int, default=10)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--taesd", type=Path, default=os.environ.get("GITD_TAESD") or None,
                    help="TAESD (SD 1.x) weights folder for the clara-taesd rows "
                         "(default $GITD_TAESD)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "results.md")
    args = ap.parse_args(argv)
    from gitd.data.shapes import make_shapes
    from gitd.log import setup_logging

    setup_logging(quiet=True)
    args.cache = args.cache or args.work / "cache"
    t0 = time.time()
    data_root = args.work / "data"
    if not (data_root / "test.json").exists():
        make_shapes(data_root, train=args.train, test=args.test, size=args.size, seed=0)
    data, test = data_root / "train.json", data_root / "test.json"

    rows: list[tuple[str, int | str, dict]] = []
    untrained = run_eval(data, test, args.work / "untrained" / "results.json", 0, args)
    rows.append(("untrained (0 epochs)", "-", untrained["summary"]))
    random_rmean: dict[int, float] = {}
    for method in args.methods:
        for k in args.sizes:
            folder = args.work / f"{method}-{k}"
            if not build_set(method, k, data, folder, args):
                print(f"skip {method}: no TAESD weights (pass --taesd or set GITD_TAESD)",
                      file=sys.stderr)
                break
            res = run_eval(folder / "annotations.json", test, folder / "results.json",
                           args.epochs, args)
            rows.append((method, k, res["summary"]))
            if method == "random":
                random_rmean[k] = res["summary"]["r_mean"]["mean"]
            print(f"{method} {k}: r_mean {res['summary']['r_mean']['mean']:.2f}",
                  file=sys.stderr, flush=True)
    full = run_eval(data, test, args.work / "full" / "results.json", args.epochs, args)
    rows.append(("full train set", args.train, full["summary"]))
    minutes = (time.time() - t0) / 60

    encoders = full.get("encoders", {})
    lines = [
        "# Results on the stand-in dataset",
        "",
        f"Measured {date.today().isoformat()} on a {platform.machine()} CPU machine (2 cores, "
        "no GPU). Every row trains the same retrieval "
        "model the same way; only the training set differs.",
        "",
        f"- Data: `gitd shapes` with seed 0: {args.train} train / {args.test} test images of "
        f"{args.size} px, 5 captions each.",
        f"- Evaluation: `gitd evaluate`, protocol `{args.protocol}`, {args.epochs} epochs, "
        f"image size {args.image_size}, image encoder "
        f"{'frozen (features cached; only the projection head trains)' if args.freeze_image else 'trainable'}, "
        f"encoders: {json.dumps(encoders) if encoders else 'offline EfficientNet-Lite0 + MiniLM'}; "
        f"the figure is the LAST epoch, mean ± sample std over {args.seeds} seeds; "
        "nothing is selected on the test set.",
        "- clara* = GITD's selection step alone (`gitd distill --preset tiny --no-diffusion "
        "--no-captioner`): CLARA medoids, each with its longest caption. clara: on the tiny "
        "preset's VAE latents at 64 px; that VAE has random weights, so this clusters a random "
        "projection of the pixels, not SD's latent space. clara-taesd: on real SD 1.x latents "
        "(`--vae` TAESD for SD 1.x) at the preset's 64 px (4x8x8); clara-taesd-128: the same at "
        "the images' own 128 px (4x16x16); clara-features: `--cluster-space features`, on the "
        "same features as herding and k-center.",
        "- herding / kcenter: L2(image feature) ++ L2(mean caption feature) of the evaluation "
        "encoders; forgetting: forgetting events per image in a "
        f"{args.forgetting_epochs}-epoch frozen-feature training on the full set, right = the "
        "pair retrieves itself within its mini-batch when presented (Toneva et al.'s "
        "presentation accuracy); forgetting-train-set: the strict test, each caption top-1 "
        "among the whole training set both ways after each epoch, summed over captions "
        "(docs/coresets.md). Every selected image keeps its longest caption, except "
        "pds-select: PDS's matched image/text k-means prototypes on the same encoders' features "
        "(no cosine filter: the two encoders share no space), the real image nearest each image "
        "prototype with the real caption nearest its text centroid.",
        "- Δ r_mean: difference from random at the same number of pairs.",
        "",
        "| training set | pairs | " + " | ".join(METRICS) + " | Δ r_mean vs random |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    for name, k, summary in rows:
        delta = "-"
        if isinstance(k, int) and k in random_rmean and name not in ("random", "full train set"):
            delta = f"{summary['r_mean']['mean'] - random_rmean[k]:+.1f}"
        lines.append(f"| {name} | {k} | " + " | ".join(fmt(summary, m) for m in METRICS)
                     + f" | {delta} |")
    cmd = "python benchmarks/bench_retrieval.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:])
    lines += ["", f"Command: `{cmd.strip()}` ({minutes:.0f} minutes, results under "
              f"`{args.work.relative_to(ROOT) if args.work.is_relative_to(ROOT) else args.work}`).",
              "", "Recall in percent. TR@K: an image is hit if any of its 5 captions ranks in "
              "the top K; IR@K: a caption is hit if its image ranks in the top K."]
    table = "\n".join(lines) + "\n"
    # A hand-written reading of the table, below NOTES_MARKER, survives a re-run.
    old = args.doc.read_text() if args.doc.exists() else ""
    if NOTES_MARKER in old:
        table += "\n" + old[old.index(NOTES_MARKER):]
    args.doc.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
