"""The results of an evaluation: per seed, per (image encoder, text encoder) pair, their mean.

The reported figure of a seed is its LAST epoch's test metric, or, with a validation split, the
test metric of the epoch whose VALIDATION r_mean is highest (ties: the earliest such epoch).
Every figure is the mean and the sample standard deviation (ddof=1; 0 for one seed) over seeds.
Several encoder pairs (a cross-architecture run) give one row each plus their mean: per seed,
the mean over the pairs, then mean and sample std of those over seeds. A best-epoch-on-test
figure is computed only on request and always labelled as such.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gitd.evaluation.sets import set_line
from gitd.retrieval.metrics import METRIC_NAMES

BEST_ON_TEST_LABEL = "best epoch ON TEST (optimistic, for comparison with papers only)"
STD_NOTE = "sample standard deviation over seeds (ddof=1); 0 with one seed"


def summarize(per_seed: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std"}} with the sample std (ddof=1), 0 for a single seed."""
    out = {}
    for k in METRIC_NAMES:
        vals = np.array([m[k] for m in per_seed], dtype=np.float64)
        std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out[k] = {"mean": float(vals.mean()), "std": std}
    return out


def pick_epoch(history: list[dict], use_val: bool) -> dict:
    if not use_val:
        return history[-1]
    best = max(h["val"]["r_mean"] for h in history)
    return next(h for h in history if h["val"]["r_mean"] == best)


def best_on_test(seed_results: list[dict]) -> dict[str, dict[str, float]]:
    return summarize([max(s["epochs"], key=lambda h: h["test"]["r_mean"])["test"]
                      for s in seed_results])


def architecture_row(run: dict[str, Any], wanted: list[int], *, best: bool) -> dict[str, Any]:
    """One (image encoder, text encoder) pair's results from its finished seeds."""
    seeds = [run["seeds"][s]["result"] for s in wanted]
    config = dict(run.get("config") or {})
    config.update({"seeds": len(wanted), "first_seed": wanted[0]})
    encoders = run.get("encoders") or {}
    row = {"image_model": (encoders.get("image") or {}).get("name"),
           "text_model": (encoders.get("text") or {}).get("name"),
           "encoders": encoders, "config": config, "seeds": seeds,
           "summary": summarize([s["reported"] for s in seeds]), "cache_key": run["key"],
           "from_cache": bool(run.get("cached")),
           "wall_time_s": round(sum(s.get("wall_time_s", 0.0) for s in seeds), 2)}
    if best:
        row["best_on_test"] = best_on_test(seeds)
    return row


def mean_row(rows: list[dict[str, Any]], wanted: list[int], *, best: bool) -> dict[str, Any]:
    """Per seed, the mean over the encoder pairs; then mean and sample std over seeds."""
    per_seed = [{k: float(np.mean([r["seeds"][i]["reported"][k] for r in rows]))
                 for k in METRIC_NAMES} for i in range(len(wanted))]
    out = {"seeds": [{"seed": s, "reported": m} for s, m in zip(wanted, per_seed)],
           "summary": summarize(per_seed)}
    if best:
        out["best_on_test"] = summarize([
            {k: float(np.mean([max(r["seeds"][i]["epochs"], key=lambda h: h["test"]["r_mean"])
                               ["test"][k] for r in rows])) for k in METRIC_NAMES}
            for i in range(len(wanted))])
    return out


def _names(rows: list[dict[str, Any]], side: str) -> list[str]:
    return list(dict.fromkeys(str(r[f"{side}_model"]) for r in rows))


def assemble(rows: list[dict[str, Any]], wanted: list[int], *, header: dict[str, Any],
             best: bool) -> dict[str, Any]:
    """The results dict: one pair's row as the whole result (as always), or several pairs
    under ``architectures`` with their mean as the summary."""
    results = dict(header)
    if len(rows) == 1:
        row = rows[0]
        results.update({k: row[k] for k in ("config", "encoders", "seeds", "summary",
                                             "cache_key", "wall_time_s")})
        if best:
            results["best_on_test"] = row["best_on_test"]
    else:
        mean = mean_row(rows, wanted, best=best)
        images, texts = _names(rows, "image"), _names(rows, "text")
        results.update({
            "config": {**rows[0]["config"], "image_model": images, "text_model": texts},
            "encoders": {"image": {"name": ", ".join(images), "models": images},
                         "text": {"name": ", ".join(texts), "models": texts}},
            "seeds": mean["seeds"], "summary": mean["summary"],
            "cross_architecture": (f"mean over {len(rows)} (image encoder, text encoder) pairs: "
                                   "per seed the mean over pairs, then mean and sample std "
                                   "over seeds"),
            "architectures": rows,
            "cache_key": [r["cache_key"] for r in rows],
            "wall_time_s": round(sum(r["wall_time_s"] for r in rows), 2)})
        if best:
            results["best_on_test"] = mean["best_on_test"]
    if best:
        results["best_on_test_label"] = BEST_ON_TEST_LABEL
    return results


def _row(label: str, summary: dict, width: int = 24) -> str:
    cells = (f"{summary[k]['mean']:.2f} ± {summary[k]['std']:.2f}" for k in METRIC_NAMES)
    return f"{label:<{width}}" + "".join(f"{c:>14}" for c in cells)


def format_table(results: dict[str, Any]) -> str:
    """The results table: TR@1/5/10, IR@1/5/10 and r_mean as mean ± std (sample std); one row
    per encoder pair and their mean for a cross-architecture run."""
    n = len(results.get("seeds") or [])
    enc = results.get("encoders") or {}
    sets = results.get("sets") or {}
    lines = [set_line(name, sets[name]) if isinstance(sets.get(name), dict)
             else f"{name}: {results.get(name)}" for name in ("train", "test", "val")
             if results.get(name)]
    overlap = results.get("test_overlap") or {}
    for warning in overlap.get("warnings", []):
        lines.append(f"WARNING: {warning}; allowed by --allow-test-overlap, so these figures "
                     "OVERSTATE retrieval")
    if overlap.get("not_checked"):
        lines.append(f"test overlap not checked: {overlap['not_checked']}")
    lines += _fallback_lines(results)
    used = results.get("train_tensors")
    if used:
        lines.append("training set: " + "; ".join(str(v) for v in used.get("notes", [])))
    lines += [f"image encoder: {enc.get('image', {}).get('name')}   text encoder: "
              f"{enc.get('text', {}).get('name')}   protocol: {results.get('protocol')}, "
              f"{results.get('epochs')} epoch(s)",
              f"reported: {results.get('selection')}; mean ± sample std over {n} seed(s)"]
    rows = results.get("architectures") or []
    labels = [f"{_short(r['image_model'])} + {_short(r['text_model'])}" for r in rows]
    width = max([24] + [len(x) + 2 for x in labels])
    lines.append(f"{'':<{width}}" + "".join(f"{k:>14}" for k in METRIC_NAMES))
    for label, r in zip(labels, rows):
        lines.append(_row(label, r["summary"], width))
    lines.append(_row("mean" if rows else "test", results["summary"], width))
    lines += _chance_lines(results, width)
    if results.get("from_cache"):
        lines.append(f"(cached: evaluated before with the same sets and settings, key "
                     f"{results.get('cache_key')})")
    if "best_on_test" in results:
        lines += ["", BEST_ON_TEST_LABEL + ":"]
        for label, r in zip(labels, rows):
            lines.append(_row(label, r["best_on_test"], width))
        lines.append(_row("best-on-test" if not rows else "mean, best-on-test",
                          results["best_on_test"], width))
    return "\n".join(lines)


def _chance_lines(results: dict[str, Any], width: int) -> list[str]:
    """The chance level of the test set (what a random ranking scores, gitd.retrieval.chance)
    as a row, a warning per K too large for the test set, and AT CHANCE when the result is
    within noise of it; nothing where the results do not say the test set's size."""
    from gitd.retrieval.chance import (at_chance, chance_noise, chance_recall,
                                       counts_from_totals, trivial_recalls)

    test = (results.get("sets") or {}).get("test") or {}
    try:
        counts = counts_from_totals(int(test["images"]), int(test["captions"]))
    except (KeyError, TypeError, ValueError):
        return []
    level = chance_recall(counts)
    lines = [f"{'chance (random ranking)':<{width}}"
             + "".join(f"{level[k]:>14.2f}" for k in METRIC_NAMES)]
    lines += [f"WARNING: {w}" for w in trivial_recalls(counts)]
    got = (results.get("summary") or {}).get("r_mean")
    if got and at_chance(got["mean"], got.get("std", 0.0), level["r_mean"],
                         chance_noise(counts)["r_mean"]):
        lines.append(f"AT CHANCE: r_mean {got['mean']:.2f} is within noise of a random "
                     f"ranking's {level['r_mean']:.2f} on this test set; these pairs taught the "
                     "retrieval model nothing this test can measure")
    return lines


def _fallback_lines(results: dict[str, Any]) -> list[str]:
    """A NOTE per encoder that stood in for the papers' (``auto`` offline: the encoder's info
    records ``fallback_for``), so a table is never read as comparable with the papers'."""
    rows = results.get("architectures") or [results]
    seen: list[str] = []
    for row in rows:
        for side, info in (row.get("encoders") or {}).items():
            if isinstance(info, dict) and info.get("fallback_for"):
                line = (f"NOTE: {side} encoder {info.get('name')} stands in for the papers' "
                        f"{info['fallback_for']} (not cached here): these figures are not "
                        "comparable with the papers'")
                if line not in seen:
                    seen.append(line)
    return seen


def _short(name: Any, width: int = 28) -> str:
    """An encoder's name for a table label: no ``timm:``, a folder by its last part."""
    text = str(name).removeprefix("timm:").rstrip("/").rsplit("/", 1)[-1]
    return text if len(text) <= width else text[:width - 1] + "…"
