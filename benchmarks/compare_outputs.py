"""Do two gitd source trees write the same outputs? Runs the tiny presets of every method (GITD
with its ablations and VAE / clustering variants, PDS, EDGE, a fine-tuning run, `gitd caption`
and the selections) on the stand-in data with each tree's sources and compares the files.

    git archive main | tar -x -C /tmp/main-src
    python benchmarks/compare_outputs.py --a /tmp/main-src/src --b src --out /tmp/compare

Images, ``annotations.json``, ``metadata.jsonl`` and ``trained.safetensors`` must be equal byte
for byte; ``config.json`` and ``manifest.json`` as JSON, less what legitimately differs between
two runs (timings, creation time, work folder, versions) and between two code versions (stage
keys and the ``plan`` block that records them). ``--only NAME`` runs some variants; a tree's
outputs are kept under ``OUT/<a|b>/`` and reused when present (``--fresh`` starts again).
TAESD variants need ``GITD_TAESD`` (a local TAESD folder) and are skipped without it. Exit
status 0 when every compared variant matches.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PAIRS = "4"
TAESD = os.environ.get("GITD_TAESD")
# name -> gitd arguments after the data path ({data}, {out}, {run} are filled in).
VARIANTS: dict[str, list[str]] = {
    "gitd": [],
    "gitd-no-cluster": ["--no-cluster"],
    "gitd-no-diffusion": ["--no-diffusion"],
    "gitd-no-captioner": ["--no-captioner"],
    "gitd-no-score": ["--no-score"],
    "gitd-selection-only": ["--no-diffusion", "--no-captioner"],
    "gitd-cluster-resolution": ["--cluster-resolution", "32"],
    "gitd-cluster-space-features": ["--cluster-space", "features"],
    "gitd-extra-captions": ["--extra-captions", "1"],
    "gitd-cluster-vae-taesd": ["--cluster-vae", "{taesd}"],
    "gitd-vae-taesd": ["--vae", "{taesd}"],
    "pds": ["--method", "pds"],
    "pds-no-diffusion": ["--method", "pds", "--no-diffusion"],
    "pds-recaption": ["--method", "pds", "--recaption"],
    "edge": ["--method", "edge"],
    "edge-finetuned": ["--method", "edge", "--finetuned", "{run}"],
    "edge-clara": ["--method", "edge", "--prompts", "clara"],
    "edge-prototype": ["--method", "edge", "--prompts", "prototype"],
}
SELECTIONS = ("random", "herding", "kcenter", "pds", "full")
VOLATILE = {"created", "timings", "work", "versions", "stages", "plan", "gitd_version"}


def gitd(src: Path, *args: str, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gitd", *args, "--quiet"]
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (PYTHONPATH={src}):\n{res.stderr[-3000:]}")


def produce(src: Path, root: Path, names: list[str], data: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    run = root / "finetune-run"
    if not (run / "trained.safetensors").exists() and any(
            n == "finetune" or "{run}" in " ".join(VARIANTS.get(n, [])) for n in names):
        gitd(src, "finetune", str(data), "--out", str(run), "--preset", "tiny", "--device",
             "cpu", "--epochs", "1", "--batch-size", "12", cwd=root)
    for name in names:
        out = root / name
        if (out / "manifest.json").exists():
            continue
        if name == "finetune":
            continue
        if name == "caption":
            base = root / "gitd"
            if not (base / "manifest.json").exists():
                produce(src, root, ["gitd"], data)
            gitd(src, "caption", str(base), "--extra", "1", "--preset", "tiny", "--device",
                 "cpu", "--out", str(out), cwd=root)
            continue
        if name.startswith("select-"):
            method = name.removeprefix("select-")
            pairs = [] if method == "full" else ["--pairs", PAIRS]
            gitd(src, "select", str(data), "--method", method, *pairs, "--out", str(out),
                 "--device", "cpu", "--cache", str(root / "feature-cache"), cwd=root)
            continue
        args = [a.format(run=run, taesd=TAESD or "") for a in VARIANTS[name]]
        gitd(src, "distill", str(data), "--preset", "tiny", "--pairs", PAIRS, "--device", "cpu",
             "--out", str(out), *args, cwd=root)


def _json(path: Path, root: Path):
    """The file's JSON with the tree's own folder (each tree writes under its own) as ROOT,
    less what legitimately differs between runs and code versions."""
    data = json.loads(path.read_text().replace(str(root.resolve()), "ROOT"))
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in VOLATILE}
        if isinstance(data.get("caption_synthesis"), dict):
            data["caption_synthesis"].pop("stage", None)  # its stage key
    return data


def compare(a: Path, b: Path) -> list[str]:
    """What differs between two outputs (empty: the same); ``a`` and ``b`` are OUT/a/NAME and
    OUT/b/NAME."""
    if (a / "trained.safetensors").exists():
        same = (a / "trained.safetensors").read_bytes() == (b / "trained.safetensors").read_bytes()
        return [] if same else ["trained.safetensors"]
    problems = []
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*")
                     if p.is_file() and "work" not in p.relative_to(a).parts)
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*")
                     if p.is_file() and "work" not in p.relative_to(b).parts)
    if files_a != files_b:
        problems.append(f"files: {sorted(set(files_a) ^ set(files_b))}")
    for rel in sorted(set(files_a) & set(files_b)):
        if rel in ("config.json", "manifest.json"):
            ja, jb = _json(a / rel, a.parent), _json(b / rel, b.parent)
            if ja != jb:
                keys = sorted(k for k in set(ja) | set(jb) if ja.get(k) != jb.get(k))
                problems.append(f"{rel}: {keys}")
        elif (a / rel).read_bytes() != (b / rel).read_bytes():
            problems.append(rel)
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, type=Path, help="first tree's src folder (e.g. main)")
    ap.add_argument("--b", required=True, type=Path, help="second tree's src folder")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--only", nargs="+", help="variant names (default: all)")
    ap.add_argument("--fresh", action="store_true", help="delete OUT first")
    ap.add_argument("--side", choices=("a", "b"), help="only produce this tree's outputs")
    args = ap.parse_args(argv)
    names = list(VARIANTS) + ["finetune", "caption"] + [f"select-{m}" for m in SELECTIONS]
    if not TAESD:
        names = [n for n in names if "taesd" not in n]
        print("GITD_TAESD is not set: the TAESD variants are skipped")
    if args.only:
        names = [n for n in names if n in args.only]
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"
    if not (data / "train.json").exists():
        gitd(args.a.resolve(), "shapes", str(data), "--train", "24", "--test", "4", "--size",
             "64", "--seed", "5", "--workers", "1", cwd=args.out)
    for side, src in (("a", args.a), ("b", args.b)):
        if args.side in (None, side):
            produce(src.resolve(), args.out / side, names, data / "train.json")
    if args.side:
        return 0
    failed = 0
    for name in names:
        target = "finetune-run" if name == "finetune" else name
        diff = compare(args.out / "a" / target, args.out / "b" / target)
        failed += bool(diff)
        print(f"{name:32s} {'same' if not diff else 'DIFFERS: ' + '; '.join(diff)}")
    print(f"{len(names) - failed} of {len(names)} variants give the same outputs")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
