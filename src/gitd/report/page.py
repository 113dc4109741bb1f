"""The page every gitd report is: one self-contained HTML file, and the formatting helpers of its
sections.

One file, no network: images are data URIs, the style sheet and the few lines of JS (package
data under ``gitd/report/assets/``) are inlined, and a Content-Security-Policy forbids the page
from loading anything else, so it can be mailed or archived and opens the same anywhere.
Everything that comes from a manifest or a results file is user data and goes through ``e``
(``html.escape``): captions come from datasets and captioners and can hold any text.

A new kind of report (``gitd report`` on a fine-tuning run, on a benchmark folder) builds its
sections with these helpers and wraps them with ``html_page``.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from html import escape
from importlib import resources
from typing import Any, Iterable

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")
TITLE_PREFIX = "gitd report:"  # every report's <title> starts so (``is_report_file``)


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """The text of ``gitd/report/assets/NAME`` (package data, installed with the wheel)."""
    return resources.files("gitd.report").joinpath("assets", name).read_text(encoding="utf-8")


def html_page(title: str, header: str, sections: Iterable[str], *, footer: str = "",
              scripts: Iterable[str] = ()) -> str:
    """A whole report: ``title`` (plain text), ``header`` and ``sections`` (HTML), ``footer``
    (HTML, beside the box the error hook writes into) and the asset ``scripts`` run at the end
    of the body. The error hook (``errors.js``) is always installed first."""
    body = [f"<header>{header}</header>", "<main>", *(s for s in sections if s), "</main>",
            f'<footer>{footer}<div id="js-errors" hidden></div></footer>',
            *(f"<script>{asset(name)}</script>" for name in scripts)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(TITLE_PREFIX + ' ' + title)}</title><script>{asset('errors.js')}</script>"
            f"<style>{asset('report.css')}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")


def nav(links: Iterable[tuple[str, str]]) -> str:
    """Links to the sections present: (anchor id, label)."""
    return "<nav>" + "".join(f'<a href="#{e(a)}">{e(label)}</a>' for a, label in links) + "</nav>"


# -- formatting ------------------------------------------------------------------------------

def e(value: Any) -> str:
    return escape(str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return e(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.{digits}f}"


def metric(stat: dict[str, float] | None, digits: int = 1) -> str:
    if not stat:
        return '<span class="muted">–</span>'
    mean, std = stat["mean"], stat.get("std", 0.0)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def digits_for(summaries: Iterable[dict[str, dict[str, float]]]) -> int:
    """One decimal for percentages, as the papers print them; more if every value is below 1,
    so that a file holding fractions (or a near-zero untrained model) does not print as 0.0."""
    means = [abs(s["mean"]) for summary in summaries for s in summary.values()]
    return 1 if means and max(means) > 1 else 3


def seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.2f} s"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def facts(pairs: Iterable[tuple[str, str]]) -> str:
    """A grid of label / value (HTML) facts."""
    cells = "".join(f"<div><dt>{e(k)}</dt><dd>{v}</dd></div>" for k, v in pairs)
    return f'<dl class="facts">{cells}</dl>'


def model_text(value: Any) -> str:
    """A models entry: a plain id, or a dict whose id/name leads and whose other fields follow."""
    if not isinstance(value, dict):
        return e(value)
    lead = next((value[k] for k in ("id", "name", "model") if value.get(k) not in (None, "")), None)
    rest = [f"{e(k)}={e(v)}" for k, v in value.items()
            if k not in ("id", "name", "model") and v not in (None, "", [], {})
            and not isinstance(v, (dict, list))]
    text = e(lead) if lead is not None else ""
    if rest:
        text += f' <span class="muted">({", ".join(rest)})</span>'
    return text or e(json.dumps(value, ensure_ascii=False))
