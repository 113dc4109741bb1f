"""The report of a ``gitd finetune`` run folder (``gitd report RUN``): its settings, data and
the loss curves of ``curves.jsonl`` (one row per optimiser step, written as training goes, so
a run still in progress or killed is reported as far as it got).

The file names are those ``gitd.stages.finetune`` writes (``settings.json``, ``curves.jsonl``,
``run.json``); the report reads them as plain JSON, defensively, and imports nothing of the
training code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gitd.report import plots
from gitd.report.page import e, facts, html_page, is_number, nav, num, seconds
from gitd.store import to_json

SETTINGS, CURVES, SUMMARY = "settings.json", "curves.jsonl", "run.json"


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` is a fine-tuning run (and not an output folder)."""
    return ((folder / CURVES).is_file() and (folder / SETTINGS).is_file()
            and not (folder / "manifest.json").exists())


def read_curves(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``curves.jsonl``; a half-written last line (a killed run) is left out."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and is_number(row.get("step")):
            rows.append(row)
    return rows


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def curves_section(run: Path, *, heading: str = "Fine-tuning loss curves") -> str:
    """The loss curves of run folder ``run`` and the last step's values; empty without curves."""
    rows = read_curves(run / CURVES)
    if not rows:
        return ""
    last = rows[-1]
    values = [(k, num(v, 4)) for k, v in last.items() if is_number(v) and k != "step"]
    total = sum(float(r.get("seconds", 0.0)) for r in rows if is_number(r.get("seconds")))
    return (f'<h2 id="curves">{e(heading)}</h2>'
            f'<p>{len(rows)} steps logged in {e(run / CURVES)}, {seconds(total)} of training; '
            f'the last (step {e(last.get("step"))}):</p>{facts(values)}'
            f'<p><img class="plot" id="curves-plot" src="{plots.loss_curves_chart(rows)}" '
            'alt="loss terms against the optimiser step"></p>')


def render_run_report(run: Path) -> str:
    record = _json(run / SETTINGS)
    summary = _json(run / SUMMARY)
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    base = record.get("base") if isinstance(record.get("base"), dict) else {}
    done = summary.get("steps")
    state = (f"finished: {done} steps" if summary else "not finished (or still running): "
             "the curves show the steps done so far")
    rows = [("state", e(state)), ("run folder", e(run)),
            ("base model", e(base.get("model", settings.get("diffusion_model", "–")))),
            ("preset", e(settings.get("preset", "–"))),
            ("data", e(data.get("path", "–"))),
            ("images / pairs", f"{e(data.get('images', '?'))} / {e(data.get('pairs', '?'))}")]
    for key in ("epochs", "batch_size", "lr", "resolution", "seed"):
        if key in settings:
            rows.append((key.replace("_", " "), e(settings[key])))
    for key in ("trainable_parameters", "processes", "mixed_precision", "device"):
        if key in summary:
            rows.append((key.replace("_", " "), e(summary[key])))
    if is_number(summary.get("seconds")):
        rows.append(("training time", seconds(float(summary["seconds"]))))
    title = f"fine-tuning run {run.name}"
    header = (f"<h1>gitd report: {e(title)}</h1>" +
              nav([("curves", "loss curves"), ("config", "settings")]) + facts(rows))
    curves = curves_section(run) or '<p class="muted" id="no-curves">No steps logged yet.</p>'
    config = ('<h2 id="config">Settings</h2><details><summary>settings.json</summary>'
              f'<pre id="config-json">{e(to_json(record))}</pre></details>')
    return html_page(title, header, [curves, config],
                     footer=f"Written by gitd from {e(run / CURVES)}. ")
