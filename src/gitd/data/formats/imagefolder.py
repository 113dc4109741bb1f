"""Hugging Face imagefolder metadata: ``metadata.jsonl`` or ``metadata.csv`` rows of ``file_name``
plus a text column (``TEXT_COLUMNS``, else the one string column)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Sequence

from gitd.data.formats.builder import RecordBuilder, describe_value, loads_annotations
from gitd.errors import DataError

TEXT_COLUMNS = ("text", "caption", "captions")


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _pick_text_column(columns: Sequence[str], sample: dict, file: str) -> str:
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    # CSV has no types; like Hugging Face's loader, a column of numbers is not text.
    others = [c for c in columns if c != "file_name"
              and isinstance(sample.get(c), (str, list)) and not _is_number(sample.get(c))]
    if len(others) == 1:
        return others[0]
    raise DataError(f"{file}: cannot tell which column holds the captions (none of "
                    f"{', '.join(TEXT_COLUMNS)}; string columns: {', '.join(others) or 'none'})")


def parse_imagefolder_rows(rows: list[tuple[int, dict]], b: RecordBuilder, *,
                           csv_lists: bool) -> None:
    if not rows:
        return
    columns: list[str] = []
    for _, r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    if "file_name" not in columns:
        raise DataError(f"{b.file}: no 'file_name' column (columns: {', '.join(columns)})")
    text = _pick_text_column(columns, rows[0][1], b.file)
    for line, r in rows:
        if r.get("file_name") in (None, ""):
            b.problem("row has no 'file_name'", line, "missing-field")
            b.end_run()
            continue
        if r.get(text) is None:
            b.problem(f"row has no {text!r} value", line, "missing-field")
            b.end_run()
            continue
        raw = r[text]
        if csv_lists and isinstance(raw, str) and raw.lstrip().startswith("["):
            try:
                parsed = loads_annotations(raw)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                raw = parsed
        b.add(line, r["file_name"], raw, image_field="file_name", caption_field=text)


def jsonl_rows(text: str, b: RecordBuilder) -> list[tuple[int, dict]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = loads_annotations(line)
        except json.JSONDecodeError as exc:
            b.problem(f"not valid JSON (column {exc.colno}: {exc.msg})", n, "json")
            continue
        except RecursionError:
            b.problem("JSON nested too deeply", n, "json")
            continue
        if not isinstance(obj, dict):
            b.problem(f"line must be a JSON object, got {describe_value(obj)}", n, "bad-row")
            continue
        rows.append((n, obj))
    return rows


def csv_rows(text: str, b: RecordBuilder) -> list[tuple[int, dict]]:
    # The csv module stops the whole file at a field over its size limit; a field that long is
    # one bad row, so the reader takes any length and rows over the usual limit are problems.
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, min(len(text) + 1, 2**31 - 1)))
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames
        if not header:
            raise DataError(f"{b.file}: CSV file has no header row")
        if any(len(h or "") > limit for h in header):
            raise DataError(f"{b.file}: CSV header has a field over {limit} characters")
        rows = []
        for r in reader:
            # line_num counts physical lines, so quoted multi-line fields keep the right line.
            line = reader.line_num
            extra = r.pop(None, None)
            if extra:
                b.problem(f"row has {len(extra)} more field(s) than the header", line, "bad-row")
                continue
            long = [k for k, v in r.items() if isinstance(v, str) and len(v) > limit]
            if long:
                b.problem(f"field {long[0]!r} is {len(r[long[0]]):,} characters long, over the "
                          f"limit of {limit:,}", line, "bad-row")
                continue
            rows.append((line, {k: v for k, v in r.items() if k is not None}))
        return rows
    except csv.Error as exc:
        raise DataError(f"{b.file}: not a readable CSV file ({exc})") from None
    finally:
        csv.field_size_limit(limit)
