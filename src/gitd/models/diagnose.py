"""Why a model on disk did not load, or loaded but will not work: one line each, with its fix.

* a folder that is not a model (no ``config.json`` / ``model_index.json`` where the loader
  looks);
* a damaged file (a truncated safetensors file, an unparsable config), found by checking every
  file the loader reads, so the line names the file;
* a missing optional package (``ImportError`` from the library);
* a config the installed library cannot read (an unknown ``model_type``, a bad field);
* an outdated snapshot: one that loads but lacks fields the installed transformers needs
  (:data:`REQUIRED_FIELDS`: BLIP-2 and LLaVA snapshots cached before their 2024 processor
  updates crash in ``generate`` under transformers 5).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from gitd.errors import ModelUnavailableError
from gitd.models.files import Layout, is_weight_file

# model class -> (where, field names of which one must be set): what the installed
# transformers reads. "config": the model's config; "processor": its processor.
REQUIRED_FIELDS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "Blip2ForConditionalGeneration": (("config", ("image_token_index", "image_token_id")),
                                      ("processor", ("num_query_tokens",))),
    "InstructBlipForConditionalGeneration": (("config", ("image_token_index", "image_token_id")),
                                             ("processor", ("num_query_tokens",))),
    "LlavaForConditionalGeneration": (("config", ("image_token_index", "image_token_id")),
                                      ("processor", ("patch_size",))),
    "LlavaNextForConditionalGeneration": (("config", ("image_token_index", "image_token_id")),
                                          ("processor", ("patch_size",))),
}


def _folders(folder: Path, layout: Layout) -> list[Path]:
    return [folder / name if name else folder for name in layout.folders]


def not_a_model(folder: Path, layout: Layout) -> str | None:
    """Why ``folder`` is not a model folder for ``layout``, or None."""
    if layout.files:
        absent = [f for f in layout.files if not (folder / f).is_file()]
        if absent:
            return f"it has no {', '.join(absent)}"
        return None
    for sub in _folders(folder, layout):
        if not (sub / "config.json").is_file():
            where = sub.relative_to(folder).as_posix() if sub != folder else ""
            return f"it has no {where + '/' if where else ''}config.json"
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why the safetensors file at ``path`` cannot be read (truncated, bad header), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return "shorter than a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100 << 20:
                return "header longer than the file (truncated)"
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"unreadable header ({type(exc).__name__})"
    if not isinstance(header, dict):
        return "header is not a table"
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return f"bad entry {key!r} in the header"
        end = max(end, int(offsets[1]))
    if 8 + n + end > size:
        return f"truncated: {size} bytes, the header promises {8 + n + end}"
    return None


def damaged_files(folder: Path, layout: Layout) -> list[str]:
    """'path: why' for every file of ``layout`` in ``folder`` that cannot be read."""
    bad = []
    paths = [folder / f for f in layout.files]
    for sub in _folders(folder, layout):
        if sub.is_dir():
            paths += sorted(p for p in sub.iterdir() if p.is_file())
    for p in paths:
        if not p.is_file():
            continue
        why = None
        if p.suffix == ".safetensors":
            why = safetensors_problem(p)
        elif p.suffix == ".json" and not is_weight_file(p.name):
            try:
                json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                why = f"not valid JSON ({type(exc).__name__})"
        if why:
            bad.append(f"{p}: {why}")
    return bad


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3].rsplit(" ", 1)[0] + "..."


def explain_load_failure(exc: BaseException, *, name: str, what: str, folder: Path,
                         layout: Layout, refresh: str) -> ModelUnavailableError | None:
    """One line for a failure of ``from_pretrained`` on ``folder`` (None: not one of the known
    kinds; the caller decides). ``refresh``: the command that fetches the model again."""
    label = f"{what} model {name!r}"
    bad = damaged_files(folder, layout)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return ModelUnavailableError(
            f"{label}: a file on disk is damaged: {bad[0]}{more}; {refresh} (with --force, "
            "which downloads every file again)", exit_code=3)
    if isinstance(exc, ImportError):
        return ModelUnavailableError(
            f"{label} needs a Python package that is not installed ({_first_line(exc)}); "
            "install it with pip", exit_code=3)
    if isinstance(exc, (FileNotFoundError, OSError)) and not isinstance(exc, PermissionError):
        return ModelUnavailableError(
            f"{label}: {folder} lacks a file the loader reads ({_first_line(exc)}); {refresh}",
            exit_code=3)
    mismatch = isinstance(exc, RuntimeError) and ("size mismatch" in str(exc)
                                                  or "Error(s) in loading" in str(exc))
    if mismatch or isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):
        from importlib.metadata import version

        libs = f"transformers {version('transformers')}, diffusers {version('diffusers')}"
        return ModelUnavailableError(
            f"{label}: its config is not one the installed libraries ({libs}) can load "
            f"({type(exc).__name__}: {_first_line(exc)}); upgrade them, or choose another "
            "model or revision", exit_code=3)
    return None


def outdated_fields(model: Any, processor: Any) -> list[str]:
    """Fields the installed transformers needs that this model's config or processor lacks
    (empty for models it has no rule for)."""
    rules = REQUIRED_FIELDS.get(type(model).__name__, ())
    objects = {"config": getattr(model, "config", None), "processor": processor}
    missing = []
    for where, names in rules:
        obj = objects[where]
        if obj is None or all(getattr(obj, n, None) is None for n in names):
            missing.append(f"{where} {names[0]}")
    return missing


def check_outdated(model: Any, processor: Any, *, name: str, what: str, source: str,
                   refresh: str) -> None:
    """Raise one line naming the model and the refresh command when it is outdated."""
    missing = outdated_fields(model, processor)
    if missing:
        from importlib.metadata import version

        raise ModelUnavailableError(
            f"{what} model {name!r} is outdated: {source} lacks {' and '.join(missing)}, which "
            f"transformers {version('transformers')} needs (the hub's files were updated in "
            f"2024); {refresh}", exit_code=3)

