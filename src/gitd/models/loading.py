"""``load_pretrained``: every real model gitd loads goes through here.

A name is a local folder (a ``save_pretrained`` folder or a hub snapshot copied by hand) or a
hub id. A hub id is resolved to a snapshot folder of the local cache by ``gitd.models.hub``
(online: the hub's current commit, with exactly the files the loader reads downloaded; offline:
the cached snapshot), and the library's ``from_pretrained`` then reads that folder with
``local_files_only`` (its own network logic is never used, so it cannot retry a dead hub for
half a minute). ``trust_remote_code`` is always False. Whatever fails is one
``ModelUnavailableError`` line naming the model, the cause and its fix, with none of the
libraries' log lines or warnings before it; a load that works lets them through afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from gitd.errors import ConfigError, GitdError, ModelUnavailableError
from gitd.log import get_logger, is_quiet
from gitd.models import hub
from gitd.models.diagnose import explain_load_failure, not_a_model
from gitd.models.files import TRANSFORMERS, Layout, has_fp16, missing_files

log = get_logger("gitd.models")

HUB_LOGGERS = ("huggingface_hub", "transformers", "diffusers")


def _quiet_loading_bars() -> None:
    # --quiet hides progress bars; the libraries draw their own while loading weights.
    import diffusers.utils.logging as dlog
    import huggingface_hub.utils as hlog
    import transformers.utils.logging as tlog

    tlog.disable_progress_bar()
    dlog.disable_progress_bar()
    hlog.disable_progress_bars()


class _Held(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def held_library_output():
    """Hold the hub libraries' log records and Python warnings while a model loads: a load that
    fails becomes gitd's one line without them (retry notices, deprecations); a load that works
    lets them through afterwards, as they were."""
    held = _Held()
    saved = []
    for name in HUB_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.handlers[:], lg.propagate))
        lg.handlers = [held]
        lg.propagate = False
    ok = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield
        ok = True
    finally:
        for lg, handlers, propagate in saved:
            # A library imported during the load set up its own handler: keep that one.
            added = [h for h in lg.handlers if h is not held and h not in handlers]
            lg.handlers = handlers + added
            if not added:
                lg.propagate = propagate
        if ok:
            for record in held.records:
                target = logging.getLogger(record.name)
                if record.levelno >= target.getEffectiveLevel():
                    target.handle(record)
            for w in caught:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _wants_fp16(kwargs: dict[str, Any]) -> bool:
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    return dtype in (torch.float16, torch.bfloat16)


def refresh_hint(kind: str, name: str, revision: str | None) -> str:
    """The command that fetches ``name`` again (a folder: how to replace it)."""
    if hub.is_repo_id(name):
        return (f"refresh it with '{hub.FETCH} --model {kind}={name}"
                f"{'@' + revision if revision else ''}' on a connected machine")
    return "save it again from a current hub snapshot (save_pretrained) or pass a hub id"


def resolve_source(model_id: str, *, kind: str, what: str, revision: str | None,
                   layout: Layout, fp16: bool) -> tuple[Path, str]:
    """(folder to load from, how to describe it) for a local folder or a hub id."""
    local = Path(model_id).expanduser()
    if local.is_dir():
        why = not_a_model(local, layout)
        if why:
            raise ModelUnavailableError(
                f"{what} model folder {model_id} is not a model folder: {why} (a "
                "save_pretrained folder or a hub snapshot has one)", exit_code=3)
        return local, f"the folder {local}"
    if model_id.startswith((".", "~", "/")) or local.exists() or not hub.is_repo_id(model_id):
        # A path, not a hub id: suggesting 'gitd fetch /some/path' would only confuse.
        raise ModelUnavailableError(f"{what} model folder {model_id} does not exist or is not "
                                    "a folder; '--preset tiny' runs fully offline", exit_code=3)
    need = hub.Need(kind, model_id, revision, layout, what)
    folder, commit = hub.locate(need, fp16=fp16)
    missing = missing_files(folder, layout)
    if missing:
        raise ModelUnavailableError(
            f"{what} model {model_id!r}: the cached snapshot {commit[:12] if commit else ''} "
            f"is incomplete (no {', '.join(missing[:3])}); {hub.fetch_hint(need)}", exit_code=3)
    return folder, f"its cached snapshot {folder}"


def load_pretrained(load: Callable[..., Any], model_id: str, *, what: str,
                    revision: str | None = None, kind: str = "model",
                    layout: Layout = TRANSFORMERS, **kwargs: Any) -> Any:
    """``load(folder, ...)`` (a ``from_pretrained``) on the folder ``model_id`` names (see the
    module doc). ``layout``: the files the loader reads (``gitd.models.files``); ``kind``: the
    model-registry kind, for the fetch command in messages. A diffusers loader
    (``layout.diffusers``) gets ``variant="fp16"`` when the folder holds fp16 weights and the
    dtype is half (or the folder holds nothing else)."""
    kwargs.setdefault("trust_remote_code", False)
    if kwargs["trust_remote_code"]:
        raise ConfigError("trust_remote_code is not allowed for models loaded by gitd")
    model_id = hub.resolve_alias(model_id)
    if is_quiet():
        _quiet_loading_bars()
    with held_library_output():
        fp16 = _wants_fp16(kwargs)
        folder, _ = resolve_source(model_id, kind=kind, what=what, revision=revision,
                                   layout=layout, fp16=fp16)
        if layout.diffusers:
            half, full = has_fp16(folder, layout)
            if half and (fp16 or not full):
                kwargs["variant"] = "fp16"
                if not fp16:
                    log.info("%s model %s: only fp16 weights are on disk; loading them in "
                             "%s", what, model_id, kwargs.get("dtype", kwargs.get("torch_dtype")))
        try:
            return load(str(folder), local_files_only=True, **kwargs)
        except GitdError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below; the unknown re-raised
            line = explain_load_failure(exc, name=model_id, what=what, folder=folder,
                                        layout=layout,
                                        refresh=refresh_hint(kind, model_id, revision))
            if line is None:
                raise
            raise line from None

