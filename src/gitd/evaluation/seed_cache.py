"""Finished seeds of an evaluation, kept so that an interrupted run resumes and an identical one
returns at once.

Each finished seed of one (image encoder, text encoder) pair is ``<folder>/seed-N.json``,
written atomically with the run key it belongs to: ``CACHE/evaluations/<key>/`` normally, or,
with the cache turned off, ``OUT.partial/<key>/`` beside the results file (removed once the
results are written). A results file that holds the key is enough on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gitd.outdir import claim, release
from gitd.store import atomic_write_json, read_json

CACHE_VERSION = 3  # bump when what a cached seed holds, or how it is computed, changes


def seed_folder(root: Path | None, key: str, out: Path | None) -> Path | None:
    if root is not None:
        return root / "evaluations" / key
    return out.with_name(out.name + ".partial") / key if out is not None else None


def finished_seeds(folder: Path | None, key: str) -> dict[int, dict]:
    """Seeds finished under ``key`` in ``folder``; a damaged or foreign file is not one."""
    done: dict[int, dict] = {}
    if folder is None or not folder.is_dir():
        return done
    for path in folder.glob("seed-*.json"):
        saved = read_json(path)
        try:
            seed = int(path.stem.removeprefix("seed-"))
        except ValueError:
            continue
        if (isinstance(saved, dict) and saved.get("run_key") == key
                and isinstance(saved.get("result"), dict)
                and saved["result"].get("seed") == seed and "reported" in saved["result"]):
            done[seed] = saved
    return done


def save_seed(folder: Path | None, key: str, result: dict, *, encoders: dict, config: dict,
              in_cache: bool) -> None:
    if folder is None:
        return
    path = folder / f"seed-{result['seed']}.json"
    atomic_write_json(path, {"run_key": key, "result": result, "encoders": encoders,
                             "config": config})
    if not in_cache:
        claim(path)


def _rows_of(prior: Any) -> list[dict]:
    if not isinstance(prior, dict):
        return []
    rows = prior.get("architectures")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else [prior]


def cached_run(root: Path | None, key: str, out: Path | None,
               wanted: list[int]) -> dict[str, Any] | None:
    """Every wanted seed of run ``key``, from ``out`` (a results file holding that run) or
    the cache, or None when any is missing."""
    if out is not None:
        for row in _rows_of(read_json(out)):
            if row.get("cache_key") != key:
                continue
            seeds = {s.get("seed"): s for s in row.get("seeds", []) if isinstance(s, dict)}
            if all(s in seeds for s in wanted):
                return {"key": key, "seeds": {s: {"result": seeds[s]} for s in wanted},
                        "encoders": row.get("encoders"), "config": row.get("config"),
                        "cached": True}
    if root is None:
        return None
    done = finished_seeds(root / "evaluations" / key, key)
    if not all(s in done for s in wanted):
        return None
    last = done[wanted[-1]]
    return {"key": key, "seeds": done, "encoders": last.get("encoders"),
            "config": last.get("config"), "cached": True}


def remove_partial(out: Path | None) -> None:
    """Remove the per-seed files waiting beside a results file just written (only those; the
    folders go if they are left empty)."""
    if out is None:
        return
    partial = out.with_name(out.name + ".partial")
    if not partial.is_dir():
        return
    for saved in partial.glob("*/seed-*.json"):
        saved.unlink(missing_ok=True)
        release(saved)
    for folder in [*partial.iterdir(), partial]:
        try:
            folder.rmdir()
        except OSError:
            pass
