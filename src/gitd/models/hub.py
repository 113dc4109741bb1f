"""The Hugging Face hub and its local cache, as gitd uses them.

* **Aliases.** Stability AI withdrew the whole Stable Diffusion 2.x family from the hub around
  2025-11-13; its weights live on as community mirrors under ``sd2-community`` (provenance in
  ``docs/pds.md``). An old id still works: it resolves to its mirror, with one log line.
* **Where a model is.** A hub id is read from a snapshot folder of the local cache
  (``refs/<revision>`` -> ``snapshots/<commit>``), never through the libraries' own network
  logic. Online (``HF_HUB_OFFLINE`` unset and the endpoint answering) the hub's current commit
  of the revision is resolved first, as ``from_pretrained`` would, and exactly the files gitd's
  loader reads (``gitd.models.files``) are downloaded into that snapshot, so a snapshot cached
  long ago is not trusted for ever. Offline, or with the hub unreachable, the cached snapshot
  is used as it is.
* **Why it is not.** Every failure is one line with its own fix (:func:`explain`): a deleted or
  gated repository, a revision that does not exist, offline and not cached, a full disk.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from gitd.errors import GitdError, ModelUnavailableError
from gitd.log import get_logger
from gitd.models.files import Layout, pipeline_components, select_files

log = get_logger("gitd.models")

# Withdrawn ids -> their community mirrors (the same weights, re-uploaded; docs/pds.md,
# docs/models.md), and who withdrew them when.
WITHDRAWN = {f"stabilityai/{name}": f"sd2-community/{name}" for name in (
    "stable-diffusion-2", "stable-diffusion-2-base", "stable-diffusion-2-1",
    "stable-diffusion-2-1-base", "stable-diffusion-2-inpainting", "stable-diffusion-2-depth",
    "stable-diffusion-2-1-unclip", "stable-diffusion-2-1-unclip-small")}
WITHDRAWN["runwayml/stable-diffusion-v1-5"] = "stable-diffusion-v1-5/stable-diffusion-v1-5"
WITHDRAWN_WHEN = "Nov 2025"
_WITHDRAWN_BY = {"stabilityai": ("Stability AI", WITHDRAWN_WHEN), "runwayml": ("RunwayML",
                                                                              "Aug 2024")}
# Seconds to wait for the hub to answer before calling it unreachable (env GITD_HUB_TIMEOUT).
HUB_TIMEOUT = 5.0
FETCH = "gitd fetch"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# org/name, or a legacy name without an org (bert-base-uncased), which the hub redirects.
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$")


def resolve_alias(model_id: str) -> str:
    """The id to load for ``model_id``: a withdrawn id's mirror (logged once), else itself."""
    mirror = WITHDRAWN.get(model_id)
    if mirror is None:
        return model_id
    _log_alias(model_id, mirror)
    return mirror


@functools.lru_cache(maxsize=None)
def _log_alias(old: str, new: str) -> None:
    who, when = _WITHDRAWN_BY[old.partition("/")[0]]
    log.warning("%s was withdrawn from the hub by %s (%s); using its community mirror %s (the "
                "same weights; see docs/models.md)", old, who, when, new)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_repo_id(name: str) -> bool:
    """Whether ``name`` reads as a hub id (``org/name``) rather than a path on disk."""
    return bool(_REPO_ID.match(name)) and not Path(name).expanduser().exists()


def endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` as it is now (huggingface_hub reads it once, at
    import; gitd passes it explicitly to every call)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_unreachable() -> str | None:
    """None when the hub endpoint answers at all; otherwise why it does not. One request with a
    short timeout and no retries (the hub libraries retry a dead connection for half a minute),
    asked once per process and endpoint."""
    return _reachability(endpoint())


@functools.lru_cache(maxsize=None)
def _reachability(url: str) -> str | None:
    import urllib.error
    import urllib.request

    try:
        timeout = float(os.environ.get("GITD_HUB_TIMEOUT", HUB_TIMEOUT))
    except ValueError:
        timeout = HUB_TIMEOUT
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None  # an HTTP answer, even an error, means the hub is there
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the hub {url} is not reachable: {' '.join(str(reason).split())[:100]}"
    return None


def offline_reason() -> str | None:
    """None when gitd may download; otherwise why not (``HF_HUB_OFFLINE``, or no hub)."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    return hub_unreachable()


# -- the local cache --------------------------------------------------------------------------
def repo_folder(repo_id: str) -> Path:
    return cache_dir() / ("models--" + repo_id.replace("/", "--"))


def cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit ``revision`` (default ``main``) points to in the local cache, if any."""
    rev = revision or "main"
    if _COMMIT.match(rev):
        return rev if (repo_folder(repo_id) / "snapshots" / rev).is_dir() else None
    try:
        commit = (repo_folder(repo_id) / "refs" / rev).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    return commit if _COMMIT.match(commit) else None


def cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    commit = cached_commit(repo_id, revision)
    if commit is None:
        return None
    folder = repo_folder(repo_id) / "snapshots" / commit
    return folder if folder.is_dir() else None


# -- what a load needs --------------------------------------------------------------------------
@dataclass(frozen=True)
class Need:
    """One hub repository a run reads: which files (``layout``), for what (``uses``: the roles
    or settings naming it, for messages)."""

    kind: str
    repo_id: str
    revision: str | None
    layout: Layout
    what: str
    uses: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        """``KIND=ID[@REV]``, as ``gitd fetch --model`` takes it."""
        return f"{self.kind}={self.repo_id}{'@' + self.revision if self.revision else ''}"

    @property
    def label(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.what} model {self.repo_id}{rev}"


@dataclass
class RemotePlan:
    """A repository's files at the hub's current commit of the revision."""

    need: Need
    commit: str
    files: list[str]
    sizes: dict[str, int]
    notes: list[str]

    @property
    def total(self) -> int:
        return sum(self.sizes.get(f, 0) for f in self.files)

    def missing_locally(self) -> list[str]:
        folder = repo_folder(self.need.repo_id) / "snapshots" / self.commit
        return [f for f in self.files if not (folder / f).is_file()]


def remote_plan(need: Need, *, fp16: bool) -> RemotePlan:
    """Ask the hub for the repository's current commit and file listing (sizes included) and
    choose the files ``need.layout`` reads. Raises ``ModelUnavailableError`` (``explain``)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint())
    try:
        info = api.model_info(need.repo_id, revision=need.revision, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 - classified into one line below
        raise explain(exc, need) from None
    sizes = {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}
    components = None
    if "model_index.json" in need.layout.files and "model_index.json" in sizes:
        components = _remote_components(api, need, info.sha)
    files, notes = select_files(sizes, need.layout, fp16=fp16, pipeline_components=components)
    return RemotePlan(need, str(info.sha), files, sizes, notes)


def _remote_components(api, need: Need, commit: str) -> list[str] | None:
    import json

    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(need.repo_id, "model_index.json", revision=commit,
                               cache_dir=str(cache_dir()), endpoint=api.endpoint)
        return pipeline_components(json.loads(Path(path).read_text(encoding="utf-8")))
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, need) from None


def download(plan: RemotePlan, *, force: bool = False) -> Path:
    """Download ``plan.files`` into the cache's snapshot of ``plan.commit`` (files already
    there are not fetched again) and point the revision's ref at it; returns the snapshot."""
    from huggingface_hub import snapshot_download

    need = plan.need
    todo = plan.files if force else plan.missing_locally()
    need_bytes = sum(plan.sizes.get(f, 0) for f in todo)
    _check_space(need, need_bytes)
    patterns = [glob.escape(f) for f in plan.files]
    try:
        folder = snapshot_download(need.repo_id, revision=need.revision or "main",
                                   allow_patterns=patterns, cache_dir=str(cache_dir()),
                                   endpoint=endpoint(), force_download=force)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, need) from None
    return Path(folder)


def _check_space(need: Need, n_bytes: int) -> None:
    if n_bytes <= 0:
        return
    where = cache_dir()
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    margin = 64 << 20
    if n_bytes + margin > free:
        raise ModelUnavailableError(
            f"{need.label}: downloading it needs {human_bytes(n_bytes)} but only "
            f"{human_bytes(free)} is free under {where} (64 MiB kept in reserve); free some "
            "space or point HF_HOME at a larger disk", exit_code=3)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


# -- one line per failure -------------------------------------------------------------------------
def fetch_hint(need: Need) -> str:
    return f"run '{FETCH} --model {need.spec}' on a connected machine"


def explain(exc: BaseException, need: Need) -> GitdError:
    """One line (a ``ModelUnavailableError``) saying why the hub could not give ``need``."""
    from huggingface_hub import errors as hub_errors

    if isinstance(exc, GitdError):
        return exc
    name = f"{need.what} model {need.repo_id!r}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    mirror = {v: k for k, v in WITHDRAWN.items()}
    if isinstance(exc, hub_errors.RevisionNotFoundError):
        return ModelUnavailableError(
            f"{name} has no revision {need.revision!r} on the hub (404); check the revision "
            "setting (a branch, tag or full commit hash)", exit_code=3)
    if isinstance(exc, hub_errors.GatedRepoError) or status in (401, 403):
        return ModelUnavailableError(
            f"{name} is gated or private on the hub ({status or 401}): accept its terms on "
            f"{endpoint()}/{need.repo_id} and log in with 'hf auth login' (or set HF_TOKEN)",
            exit_code=3)
    if isinstance(exc, (hub_errors.RepositoryNotFoundError, hub_errors.DisabledRepoError)) \
            or status == 404:
        extra = ""
        if need.repo_id.startswith("stabilityai/stable-diffusion-2") or need.repo_id in mirror:
            extra = (f" (Stability AI withdrew the Stable Diffusion 2.x family in "
                     f"{WITHDRAWN_WHEN}; its mirrors are under sd2-community)")
        return ModelUnavailableError(
            f"{name} does not exist on the hub (404: deleted, renamed or mistyped){extra}; "
            "check the id, or pass a local folder", exit_code=3)
    if isinstance(exc, OSError) and getattr(exc, "errno", None) in (28, 122):  # ENOSPC, EDQUOT
        return ModelUnavailableError(
            f"{name}: the disk under {cache_dir()} filled up while downloading; free some space "
            f"or point HF_HOME at a larger disk, then run '{FETCH}' again (finished files are "
            "kept)", exit_code=3)
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if len(detail) > 140:
        detail = detail[:137].rsplit(" ", 1)[0] + "..."
    return ModelUnavailableError(f"{name} could not be downloaded from {endpoint()} "
                                 f"({type(exc).__name__}: {detail}); try again, or "
                                 f"{fetch_hint(need)}", exit_code=3)


def not_cached(need: Need, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"{need.what} model {need.repo_id!r} is not in the local Hugging Face cache "
        f"({cache_dir()}) and cannot be downloaded ({reason}); {fetch_hint(need)} and copy the "
        "cache here (or set HF_HOME to it), or pass a local folder; '--preset tiny' runs fully "
        "offline", exit_code=3)


def locate(need: Need, *, fp16: bool) -> tuple[Path, str | None]:
    """(snapshot folder, commit) holding what ``need`` reads: downloaded (only what is missing
    at the hub's current commit) when online, the cached snapshot otherwise."""
    reason = offline_reason()
    if reason is None:
        try:
            plan = remote_plan(need, fp16=fp16)
        except ModelUnavailableError as exc:
            # The hub refuses (deleted, gated without a token, ...) what is on disk already:
            # use that, saying so.
            folder = cached_snapshot(need.repo_id, need.revision)
            if folder is None:
                raise
            log.warning("%s: %s; using the cached snapshot %s", need.label, exc, folder.name[:12])
            return folder, folder.name
        for note in plan.notes:
            log.info("%s: %s", need.label, note)
        todo = plan.missing_locally()
        if todo:
            log.info("%s: downloading %d file(s), %s, at commit %s", need.label, len(todo),
                     human_bytes(sum(plan.sizes.get(f, 0) for f in todo)), plan.commit[:12])
        return download(plan), plan.commit
    folder = cached_snapshot(need.repo_id, need.revision)
    if folder is None:
        raise not_cached(need, reason)
    if not hub_offline():
        log.warning("%s: %s; using the cached snapshot %s, which may be outdated", need.label,
                    reason, folder.name[:12])
    return folder, folder.name

