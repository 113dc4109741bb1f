"""The benchmark's comparison table, as markdown: one row per cell, recall as mean ± sample std
over seeds, the difference from random at the same number of pairs, and the cell's cost."""

from __future__ import annotations

from typing import Any

METRICS = ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "r_mean")


def _stat(summary: dict, key: str) -> str:
    m = summary.get(key) or {}
    return f"{m.get('mean', float('nan')):.1f} ± {m.get('std', 0.0):.1f}"


def _cost(step: dict | None) -> str:
    if not step:
        return "-"
    if step.get("made") == "elsewhere":
        return "elsewhere"
    seconds = float(step.get("seconds") or 0.0)
    text = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return f"{text} ({step['device']})" if step.get("device") else text


def benchmark_table(spec: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The markdown table of finished cells, in the benchmark's order."""
    random = {r.get("pairs"): r["summary"]["r_mean"]["mean"] for r in records
              if (r.get("cell") or {}).get("method") == "random" and r.get("summary")}
    lines = ["| set | made by | pairs | " + " | ".join(METRICS)
             + " | Δ r_mean vs random | making | evaluating |",
             "|---|---|---|" + "---|" * (len(METRICS) + 3)]
    for r in records:
        cell = r.get("cell") or {}
        summary = r.get("summary") or {}
        pairs = r.get("pairs")
        delta = "-"
        if cell.get("method") != "random" and pairs in random and summary:
            delta = f"{summary['r_mean']['mean'] - random[pairs]:+.1f}"
        made = (f"{cell.get('kind')} {cell.get('method')}" if cell.get("method")
                else f"extra: {cell.get('path')}")
        lines.append(f"| {cell.get('name')} | {made} | {pairs if pairs is not None else '-'} | "
                     + " | ".join(_stat(summary, m) for m in METRICS)
                     + f" | {delta} | {_cost(r.get('make'))} | {_cost(r.get('evaluate'))} |")
    evaluation = spec.get("evaluate") or {}
    settings = ", ".join(f"{k} {v}" for k, v in sorted(evaluation.items())) or "defaults"
    lines += ["", f"Data {spec.get('data')}, test {spec.get('test')}; protocol "
              f"{spec.get('protocol')} ({settings}); every figure is the last epoch, mean ± "
              "sample std over seeds, recall in percent. Costs are wall time on "
              f"{_machine(spec.get('machine') or {})}."]
    return "\n".join(lines)


def _machine(info: dict[str, Any]) -> str:
    parts = [f"{info.get('machine', '?')}, {info.get('cpus', '?')} CPU cores"]
    if info.get("gpu"):
        parts.append(str(info["gpu"]))
    return " + ".join(parts)
