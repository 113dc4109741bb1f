"""The report of a ``gitd benchmark`` folder: the comparison table with each cell's cost, and
recall against the number of pairs, as one self-contained HTML page.

Reads only the folder's JSON files (``benchmark.json``, ``cells/*.json``), each defensively:
a cell not finished yet, or a file damaged by hand, is listed as such, never a traceback.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from gitd.errors import GitdError
from gitd.log import get_logger
from gitd.outdir import Inputs, check_output_file, claim, file_starts_with
from gitd.report import plots
from gitd.report.page import html_page
from gitd.report.results import METRICS
from gitd.store import atomic_write_text

log = get_logger("report")

SPEC_FILE = "benchmark.json"


def is_benchmark(folder: str | Path) -> bool:
    """Whether ``folder`` is a folder ``gitd benchmark`` wrote."""
    return file_starts_with(Path(folder) / SPEC_FILE, b'"gitd_benchmark"', limit=1 << 12)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _stat(summary: dict, key: str) -> str:
    m = summary.get(key) if isinstance(summary, dict) else None
    if not isinstance(m, dict) or not isinstance(m.get("mean"), (int, float)):
        return "–"
    std = m.get("std") if isinstance(m.get("std"), (int, float)) else 0.0
    return f"{m['mean']:.1f} ± {std:.1f}"


def _cost(step: Any) -> str:
    if not isinstance(step, dict):
        return "–"
    if step.get("made") == "elsewhere":
        return "made elsewhere"
    try:
        seconds = float(step.get("seconds") or 0.0)
    except (TypeError, ValueError):
        return "–"
    text = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    note = " (cached)" if step.get("note") else ""
    return f"{text} on {step['device']}{note}" if step.get("device") else text + note


def load_cells(folder: Path) -> tuple[dict, list[dict]]:
    """The benchmark's spec and one record per cell, in its order (unfinished: no summary)."""
    spec = _read(folder / SPEC_FILE)
    if not isinstance(spec, dict):
        raise GitdError(f"{folder / SPEC_FILE}: unreadable benchmark description")
    records = []
    for cell in spec.get("cells") or []:
        if not isinstance(cell, dict) or not isinstance(cell.get("name"), str):
            continue
        rec = _read(folder / "cells" / f"{cell['name']}.json")
        rec = rec if isinstance(rec, dict) else {}
        done = rec.get("status") == "done" and isinstance(rec.get("summary"), dict)
        records.append({**rec, "cell": cell, "done": done})
    return spec, records


def render_benchmark(folder: str | Path) -> str:
    folder = Path(folder)
    spec, records = load_cells(folder)
    done = [r for r in records if r["done"]]
    random = {r.get("pairs"): r["summary"].get("r_mean", {}).get("mean") for r in done
              if r["cell"].get("method") == "random"}
    head = "".join(f"<th>{m}</th>" for m in METRICS)
    rows = []
    for r in records:
        cell = r["cell"]
        made = (f"{cell.get('kind')} {cell.get('method')}" if cell.get("method")
                else f"extra: {cell.get('path')}")
        if not r["done"]:
            rows.append(f"<tr><td>{_e(cell['name'])}</td><td>{_e(made)}</td>"
                        f'<td colspan="{len(METRICS) + 4}" class="muted">not finished '
                        f"({_e(r.get('status') or 'not started')}): re-run the same gitd "
                        "benchmark command to resume</td></tr>")
            continue
        pairs, summary = r.get("pairs"), r["summary"]
        delta = "–"
        base = random.get(pairs)
        mean = (summary.get("r_mean") or {}).get("mean")
        if cell.get("method") != "random" and isinstance(base, (int, float)) and \
                isinstance(mean, (int, float)):
            delta = f"{mean - base:+.1f}"
        cells = "".join(f'<td class="num">{_stat(summary, m)}</td>' for m in METRICS)
        rows.append(f"<tr><td>{_e(cell['name'])}<br><span class=\"muted\">"
                    f"{_e(r.get('results') or '')}</span></td><td>{_e(made)}</td>"
                    f'<td class="num">{_e(pairs if pairs is not None else "–")}</td>{cells}'
                    f'<td class="num">{delta}</td><td>{_e(_cost(r.get("make")))}</td>'
                    f'<td>{_e(_cost(r.get("evaluate")))}</td></tr>')
    points = [{"method": r["cell"].get("method") or r["cell"]["name"], "pairs": r.get("pairs"),
               "summary": r["summary"]} for r in done if isinstance(r.get("pairs"), int)]
    plot = ""
    if len({(p["method"], p["pairs"]) for p in points}) >= 2:
        plot = (f'<h2>Recall against the number of pairs</h2><p><img class="plot" '
                f'id="recall-plot" src="{plots.recall_vs_pairs_chart(points)}" '
                'alt="recall at K against the number of pairs, per method"></p>')
    evaluation = spec.get("evaluate") if isinstance(spec.get("evaluate"), dict) else {}
    settings = ", ".join(f"{k} {v}" for k, v in sorted(evaluation.items())) or "defaults"
    machine = spec.get("machine") if isinstance(spec.get("machine"), dict) else {}
    where = f"{machine.get('machine', '?')}, {machine.get('cpus', '?')} CPU cores" + (
        f", {machine['gpu']}" if machine.get("gpu") else "")
    title = f"benchmark, {len(done)} of {len(records)} sets"
    header = (f"<h1>{_e(title)}</h1>"
              f"<p>Data <code>{_e(spec.get('data'))}</code>, test <code>{_e(spec.get('test'))}"
              f"</code>; protocol <b>{_e(spec.get('protocol'))}</b> ({_e(settings)}).</p>")
    body = (
        '<h2>Comparison</h2><div class="scroll"><table id="benchmark-table"><tr><th>set</th>'
        f"<th>made by</th><th>pairs</th>{head}<th>Δ r_mean vs random</th><th>making</th>"
        f"<th>evaluating</th></tr>{''.join(rows)}</table></div>"
        '<p class="muted">Recall in percent, mean ± sample standard deviation over seeds, '
        "from the last training epoch: never an epoch picked on the test set. Costs are wall "
        f"time on {_e(where)} ({_e(machine.get('host', ''))}).</p>" + plot)
    return html_page(title, header, [body])


def write_benchmark_report(folder: str | Path, *, dest: str | Path | None = None) -> Path:
    """Write the report of benchmark ``folder`` to ``dest`` (default ``BENCH/report.html``)."""
    folder = Path(folder)
    dest = Path(dest) if dest is not None else folder / "report.html"
    html = render_benchmark(folder)
    inputs = Inputs().file(folder / SPEC_FILE, "benchmark description")
    for p in (folder / "cells").glob("*.json"):
        inputs.file(p, "benchmark cell")
    check_output_file(dest, inputs, what="report", owned=_is_report_page, create_parent=True)
    atomic_write_text(dest, html)
    claim(dest)
    log.info("wrote %s", dest)
    return dest


def _is_report_page(path: Path) -> bool:
    """A page gitd wrote (every report's title starts so), which a new report may replace.
    Not gitd.report.html's: that module dispatches to this one."""
    return file_starts_with(path, b"<title>gitd report:", limit=1 << 14)
