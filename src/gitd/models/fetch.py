"""``gitd fetch`` and the check before a run: which hub repositories a run reads, whether they
can be had, and downloading exactly the files the loaders read.

Clusters often have an online login node and offline compute nodes: ``gitd fetch`` on the first
(with the run's method, preset and model settings), then ``HF_HUB_OFFLINE=1 gitd distill ...``
on the second reads only the local cache. ``check_models`` runs before a run does any work and
lists every model it cannot have in one message, with the ``gitd fetch`` command that fixes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from gitd.errors import GitdError, ModelUnavailableError
from gitd.log import get_logger
from gitd.models import hub
from gitd.models.files import missing_files
from gitd.models.hub import Need, human_bytes

log = get_logger("gitd.fetch")


def merge(needs: Iterable[Need | None]) -> list[Need]:
    """One ``Need`` per (repository, revision), first seen first: the union of the files
    its uses read (a pipeline's ``vae/`` and the whole pipeline, say)."""
    out: dict[tuple[str, str | None], Need] = {}
    for need in needs:
        if need is None:
            continue
        key = (need.repo_id, need.revision)
        if key in out:
            old = out[key]
            # Named after the use that reads the most (a pipeline rather than its VAE).
            what = need.what if len(need.layout.folders) > len(old.layout.folders) else old.what
            out[key] = dataclasses.replace(
                old, layout=old.layout | need.layout, what=what,
                uses=tuple(dict.fromkeys(old.uses + need.uses)))
        else:
            out[key] = need
    return list(out.values())


def needs_of_roles(roles: dict[str, Any], settings: Any, *, used: Iterable[str],
                   label: str = "") -> list[Need]:
    """The repositories the ``used`` roles of a method read (``gitd.models.roles.Role``:
    ``ref(settings)``, ``options(settings)``)."""
    from gitd.models.registry import model_need

    out = []
    used = set(used)
    for role, spec in roles.items():
        if role not in used:
            continue
        ref = spec.ref(settings)
        need = model_need(ref.kind, ref.name, ref.revision, **spec.options(settings))
        if need is not None:
            out.append(dataclasses.replace(need, uses=(f"{label}{role}",)))
    return out


def _offline_problem(need: Need) -> str | None:
    folder = hub.cached_snapshot(need.repo_id, need.revision)
    if folder is None:
        return "not in the cache"
    missing = missing_files(folder, need.layout)
    return f"incomplete: no {', '.join(missing[:3])}" if missing else None


def fetch_command(bad: list[Need], *, base: str = "", covered: Iterable[Need] = ()) -> str:
    """The ``gitd fetch`` command for ``bad``: ``base`` (``gitd fetch --method M --preset P``)
    when it covers some of them (``covered``: what ``base`` fetches), plus ``--model KIND=ID``
    for each it does not."""
    keys = {(n.repo_id, n.revision) for n in covered}
    extra = [n for n in bad if (n.repo_id, n.revision) not in keys]
    head = base if base and len(extra) < len(bad) else hub.FETCH
    return " ".join([head] + [f"--model {n.spec}" for n in extra])


def check_models(needs: Iterable[Need | None], *,
                 command: str | Callable[[list[Need]], str] | None = None) -> None:
    """Raise one ``ModelUnavailableError`` naming every model of ``needs`` the run cannot have
    (offline: not in the local cache; online: refused by the hub), before any work.
    ``command``: the ``gitd fetch`` command that fetches them (or a function of the missing
    ones giving it; default ``fetch_command``)."""
    needs = merge(needs)
    if not needs:
        return
    reason = hub.offline_reason()
    if reason is not None:
        bad = [(n, p) for n in needs if (p := _offline_problem(n)) is not None]
        if not bad:
            return
        listing = "; ".join(f"{n.label} ({p})" for n, p in bad)
        missing = [n for n, _ in bad]
        if command is None:
            command = fetch_command(missing)
        elif callable(command):
            command = command(missing)
        raise ModelUnavailableError(
            f"{len(bad)} model(s) of this run cannot be loaded: {listing}; they are not on disk "
            f"under {hub.cache_dir()} and cannot be downloaded ({reason}). Fetch them on a "
            f"connected machine with '{command}' and copy the cache here (or set HF_HOME to "
            "it), or pass local folders; '--preset tiny' runs fully offline", exit_code=3)
    refused = []
    for need in needs:
        try:
            hub.remote_plan(need, fp16=False)
        except GitdError as exc:
            if hub.cached_snapshot(need.repo_id, need.revision) is None:
                refused.append(str(exc))  # (a cached one is used, with a warning)
    if refused:
        raise ModelUnavailableError(f"{len(refused)} model(s) of this run cannot be had: "
                                    + " | ".join(refused), exit_code=3)


def check_named(models: Iterable[tuple[str, str, str | None]], *, base: str,
                preset: Iterable[tuple[str, str, str | None]] = ()) -> None:
    """``check_models`` for (kind, name, revision) triples of a command's settings; ``base``:
    the ``gitd fetch`` command that fetches ``preset``'s models (the command's preset)."""
    from gitd.models.registry import model_need

    needs = [model_need(kind, name, rev) for kind, name, rev in models]
    covered = [n for n in (model_need(k, m, r) for k, m, r in preset) if n is not None]
    check_models(needs, command=lambda bad: fetch_command(bad, base=base, covered=covered))


# -- gitd fetch ---------------------------------------------------------------------------------
def dry_run(needs: list[Need], *, fp16: bool) -> list[str]:
    """Lines saying what ``fetch`` would download, from the layouts alone (no network)."""
    lines = []
    for need in needs:
        lines.append(f"{need.repo_id}  revision {need.revision or 'main (the current commit)'}"
                     f"  [{need.what}; {', '.join(need.uses) or 'asked for'}]")
        lines += [f"    {p}" for p in need.layout.patterns(fp16)]
    return lines


def fetch(needs: list[Need], *, fp16: bool, force: bool = False,
          echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Download what ``needs`` read, saying per repository its commit, files and size; returns
    {repo: {commit, files, bytes, downloaded}}. Every repository is planned first (a refused
    one stops before anything is downloaded)."""
    reason = hub.offline_reason()
    if reason is not None:
        raise ModelUnavailableError(f"gitd fetch needs the hub, and {reason}; run it on a "
                                    "machine that reaches it (or unset HF_HUB_OFFLINE), or use "
                                    "--dry-run to see what it would fetch", exit_code=3)
    plans = [hub.remote_plan(need, fp16=fp16) for need in needs]
    summary: dict[str, Any] = {}
    total = new = 0
    for plan in plans:
        todo = plan.files if force else plan.missing_locally()
        size, todo_size = plan.total, sum(plan.sizes.get(f, 0) for f in todo)
        echo(f"{plan.need.repo_id} @ {plan.commit[:12]}: {len(plan.files)} files, "
             f"{human_bytes(size)} ({human_bytes(todo_size)} to download)"
             f"  [{', '.join(plan.need.uses) or 'asked for'}]")
        for name in plan.files:
            echo(f"    {name}  {human_bytes(plan.sizes.get(name, 0))}"
                 f"{'' if name in todo else '  (cached)'}")
        for note in plan.notes:
            echo(f"    note: {note}")
        hub.download(plan, force=force)
        summary[plan.need.repo_id] = {"commit": plan.commit, "files": plan.files,
                                      "bytes": size, "downloaded": todo_size}
        total += size
        new += todo_size
    echo(f"{len(plans)} repositories, {human_bytes(total)} in the cache ({human_bytes(new)} "
         f"downloaded) under {hub.cache_dir()}")
    return summary

