"""A local HTTP server that answers the Hugging Face hub's API for a few repositories, so that
tests run ``huggingface_hub`` (and gitd's use of it) for real, offline: ``HF_ENDPOINT`` (or
``huggingface_hub.constants.ENDPOINT``) pointed at :attr:`LocalHub.url`.

It speaks what ``huggingface_hub`` reads (see its ``hf_api.py``, ``file_download.py`` and
``_snapshot_download.py``):

* ``GET /api/models/{id}`` and ``/api/models/{id}/revision/{rev}`` (``?blobs=true`` adds sizes):
  ``id``, ``sha`` and ``siblings``;
* ``GET /api/models/{id}/tree/{rev}?recursive=...``: the file listing (files and folders);
* ``HEAD``/``GET /{id}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length``;
* errors as the hub sends them: ``X-Error-Code`` ``RepoNotFound`` (404), ``GatedRepo`` (401),
  ``RevisionNotFound`` and ``EntryNotFound`` (404).

Every request is recorded (``requests``), so a test can assert which files were downloaded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


class Repo:
    def __init__(self):
        self.commits: dict[str, dict[str, bytes]] = {}
        self.main: str | None = None
        self.error: tuple[int, str] | None = None  # (status, X-Error-Code) for every request
        self.declared_sizes: dict[str, int] = {}  # sizes the API reports instead of the real one


class LocalHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                hub._answer(self, head=True)

            def do_GET(self):
                hub._answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- content -----------------------------------------------------------------------------
    def add_commit(self, repo_id: str, files: dict[str, bytes] | Path, *,
                   main: bool = True) -> str:
        """A new commit of ``repo_id`` holding ``files`` (a mapping or a folder); returns its
        hash. ``main``: the ``main`` branch points at it."""
        if isinstance(files, Path):
            files = {p.relative_to(files).as_posix(): p.read_bytes()
                     for p in sorted(files.rglob("*")) if p.is_file()}
        repo = self.repos.setdefault(repo_id, Repo())
        digest = hashlib.sha1(repr(sorted((k, hashlib.sha1(v).hexdigest())
                                          for k, v in files.items())).encode()
                              + str(len(repo.commits)).encode()).hexdigest()
        repo.commits[digest] = dict(files)
        if main:
            repo.main = digest
        return digest

    def fail(self, repo_id: str, status: int, code: str) -> None:
        self.repos.setdefault(repo_id, Repo()).error = (status, code)

    def downloads(self) -> list[str]:
        """``repo/path`` of every file body sent (GET on a resolve URL)."""
        out = []
        for method, path in self.requests:
            if method == "GET" and "/resolve/" in path:
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                out.append(f"{repo}/{rest.partition('/')[2]}")
        return out

    # -- protocol ----------------------------------------------------------------------------
    def _send(self, h, status: int, body: bytes = b"", headers: dict | None = None,
              head: bool = False) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, str(v))
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _json(self, h, obj, head=False):
        self._send(h, 200, json.dumps(obj).encode(), {"Content-Type": "application/json"}, head)

    def _error(self, h, status: int, code: str, head: bool, commit: str | None = None):
        headers = {"X-Error-Code": code, "X-Error-Message": code}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(h, status, json.dumps({"error": code}).encode(), headers, head)

    def _commit(self, repo: Repo, rev: str) -> str | None:
        if rev in repo.commits:
            return rev
        return repo.main if rev == "main" else None

    def _answer(self, h, *, head: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        self.requests.append(("HEAD" if head else "GET", path))
        query = parse_qs(url.query)
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):]
            parts = rest.split("/")
            repo_id = "/".join(parts[:2])
            tail = parts[2:]
            repo = self.repos.get(repo_id)
            if repo is None or repo.error:
                status, code = repo.error if repo and repo.error else (404, "RepoNotFound")
                return self._error(h, status, code, head)
            kind = tail[0] if tail else "revision"
            rev = tail[1] if len(tail) > 1 else "main"
            commit = self._commit(repo, rev)
            if commit is None:
                return self._error(h, 404, "RevisionNotFound", head)
            files = repo.commits[commit]
            if kind == "revision":
                blobs = query.get("blobs", ["false"])[0].lower() == "true"
                siblings = [{"rfilename": k, **({"size": repo.declared_sizes.get(k, len(v)),
                                                  "blobId": hashlib.sha1(v).hexdigest()}
                                                 if blobs else {})}
                            for k, v in sorted(files.items())]
                return self._json(h, {"id": repo_id, "modelId": repo_id, "sha": commit,
                                      "private": False, "gated": False, "disabled": False,
                                      "downloads": 0, "likes": 0, "tags": [],
                                      "siblings": siblings}, head)
            if kind == "tree":
                entries, folders = [], set()
                for k, v in sorted(files.items()):
                    parent = k.rpartition("/")[0]
                    while parent:
                        folders.add(parent)
                        parent = parent.rpartition("/")[0]
                    entries.append({"type": "file", "path": k, "size": len(v),
                                    "oid": hashlib.sha1(v).hexdigest()})
                entries += [{"type": "directory", "path": f, "oid": "0" * 40}
                            for f in sorted(folders)]
                return self._json(h, entries, head)
            return self._error(h, 404, "EntryNotFound", head)
        if "/resolve/" in path:
            repo_id, _, rest = path.lstrip("/").partition("/resolve/")
            rev, _, filename = rest.partition("/")
            repo = self.repos.get(repo_id)
            if repo is None or repo.error:
                status, code = repo.error if repo and repo.error else (404, "RepoNotFound")
                return self._error(h, status, code, head)
            commit = self._commit(repo, rev)
            if commit is None:
                return self._error(h, 404, "RevisionNotFound", head)
            data = repo.commits[commit].get(filename)
            if data is None:
                return self._error(h, 404, "EntryNotFound", head, commit)
            etag = hashlib.sha256(data).hexdigest()
            return self._send(h, 200, data, {"X-Repo-Commit": commit, "ETag": f'"{etag}"',
                                             "Accept-Ranges": "bytes"}, head)
        # The endpoint itself (gitd's reachability check) and anything else.
        return self._send(h, 200 if path == "/" else 404, b"", {}, head)
