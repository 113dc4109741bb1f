"""The HTML report of a distilled (or selected) set: ``write_report(out_dir, results=..., dest=...)``.

Importing this package is cheap; matplotlib and PIL are imported only when a report is rendered.
"""

from gitd.report.html import load_manifest, render_report, write_report
from gitd.report.results import Result, find_results, read_result

__all__ = ["write_report", "render_report", "load_manifest", "read_result", "find_results",
           "Result"]
