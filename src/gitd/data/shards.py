"""WebDataset input: tar shards of ``KEY.jpg|jpeg|png|webp`` + ``KEY.txt`` (+ optional ``KEY.json``).

This is the layout img2dataset writes and the one web-scale image-text sets (CC3M, CC12M,
LAION) are held in. A dataset is one shard, a folder of ``*.tar`` shards, or a brace pattern
(``data/{00000..00331}.tar``, expanded by ``webdataset``'s own ``expand_urls``). Members are
grouped into samples by ``webdataset``'s ``group_by_keys`` (key = member name up to the first dot
of its base name, suffix lower-cased), so gitd sees exactly the samples ``wds.WebDataset`` yields.

Nothing here reads a whole shard: a shard is scanned header by header (``tarfile`` seeks over
member data), only the small ``.txt`` captions are read, and each image is remembered as a
``TarMember`` (shard, member name, data offset, size). Later stages open an image by reading those
``size`` bytes at that offset, so encoding the medoids of a 3.3M-image set touches only the
medoids' bytes. A ``.txt`` holds one caption per non-empty line.

Record ids are ``SHARD/KEY`` with ``SHARD`` the shard's path relative to the shards' common folder
without ``.tar``: stable across runs and machines.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from gitd.data.records import Dataset, Problem, Record
from gitd.errors import DataError
from gitd.log import progress

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
CAPTION_SUFFIX = "txt"
# A caption file larger than this is not a caption; reading it would be a memory hazard.
MAX_CAPTION_BYTES = 1 << 20


@dataclass(frozen=True)
class TarMember:
    """One image inside a tar shard, opened by offset without reading the rest of the shard."""

    shard: Path
    name: str
    offset: int  # of the member's data, not its header
    size: int

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.name)[1].lower()

    def read_bytes(self) -> bytes:
        with open(self.shard, "rb") as f:
            data = os.pread(f.fileno(), self.size, self.offset)
        if len(data) != self.size:
            raise OSError(f"shard is truncated: member needs {self.size} bytes at offset "
                          f"{self.offset}, {len(data)} there")
        return data

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.read_bytes())

    def stamp(self) -> tuple:
        """Cheap identity for cache keys: the shard's size and mtime and the member's place."""
        try:
            st = os.stat(self.shard)
            return (str(self), st.st_size, st.st_mtime_ns, self.offset, self.size)
        except OSError:
            return (str(self), None, None, self.offset, self.size)

    def __str__(self) -> str:
        return f"{self.shard}::{self.name}"


def is_tar_file(path: Path) -> bool:
    """By content, not name: a POSIX (ustar/GNU) tar header at the start of the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return len(head) == 512 and head[257:262] == b"ustar"


def is_shard_pattern(path: str | Path) -> bool:
    s = str(path)
    return "{" in s and "}" in s and ".." in s and not Path(s).exists()


def shard_paths(path: str | Path) -> list[Path] | None:
    """The shards ``path`` names (a tar file, a folder of ``*.tar``, a brace pattern), or None
    when ``path`` is not WebDataset input. A pattern naming missing shards raises DataError."""
    p = Path(path)
    if is_shard_pattern(path):
        from webdataset.shardlists import expand_urls

        shards = [Path(u) for u in expand_urls(str(path))]
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise DataError(f"{path}: {len(missing)} of {len(shards)} shards not found (first: "
                            f"{missing[0]})")
        return shards
    if p.is_dir():
        shards = sorted(c for c in p.iterdir() if c.suffix == ".tar" and c.is_file())
        return shards or None
    if p.is_file() and is_tar_file(p):
        return [p]
    return None


def _shard_label(shard: Path, root: Path) -> str:
    rel = os.path.relpath(shard, root).replace(os.sep, "/")
    return rel[:-4] if rel.endswith(".tar") else rel


def _members(shard: Path, problems: list[Problem]) -> Iterator[dict[str, Any]]:
    """Member dicts for ``webdataset.tariterators.group_by_keys``: ``data`` is (offset, size,
    bytes of a caption or None). Headers only: tarfile seeks over image data."""
    try:
        f = open(shard, "rb")
    except OSError as exc:
        problems.append(Problem(str(shard), f"cannot read shard ({exc.strerror or exc})",
                                None, "bad-shard"))
        return
    with f:
        try:
            tf = tarfile.open(fileobj=f, mode="r:")
        except tarfile.TarError as exc:
            problems.append(Problem(str(shard), f"not a readable tar file ({exc})", None,
                                    "bad-shard"))
            return
        last = None
        while True:
            try:
                info = tf.next()
            except tarfile.TarError as exc:
                problems.append(Problem(str(shard), f"shard is damaged after member {last!r} "
                                        f"({exc}); the samples before it are kept", None,
                                        "bad-shard"))
                break
            if info is None:
                break
            tf.members = []  # TarFile keeps every header it read; a shard's list would grow
            last = info.name
            if not info.isreg():
                continue
            ext = info.name.rsplit(".", 1)[-1].lower() if "." in info.name else ""
            text = None
            if ext == CAPTION_SUFFIX:
                if info.size > MAX_CAPTION_BYTES:
                    text = b""  # reported as an oversized caption below
                    problems.append(Problem(str(shard), f"member {info.name!r}: caption file "
                                            f"of {info.size} bytes; skipped", None,
                                            "bad-caption"))
                else:
                    text = os.pread(f.fileno(), info.size, info.offset_data)
            yield {"fname": info.name, "data": (info.offset_data, info.size, text),
                   "__url__": str(shard)}
    yield {}  # webdataset's end-of-shard marker: samples never span shards


def _captions(raw: bytes) -> tuple[list[str], str | None]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], f"caption is not UTF-8 (undecodable byte at offset {exc.start})"
    caps = [" ".join(line.split()) for line in text.splitlines()]
    return [c for c in caps if c], None


def _scan_shard(shard: Path, label: str) -> tuple[list[Record], list[Problem]]:
    """The records and problems of one shard (top level: a process pool runs it)."""
    from webdataset.tariterators import group_by_keys

    problems: list[Problem] = []
    records: list[Record] = []
    seen: set[str] = set()
    try:
        mtime = os.stat(shard).st_mtime_ns
    except OSError:
        mtime = None

    def report(message: str, kind: str) -> None:
        problems.append(Problem(str(shard), message, None, kind))

    def on_error(exc: Exception) -> bool:
        # group_by_keys raises for two members of one sample with the same suffix.
        report(f"{exc.args[0] if exc.args else exc}; the second is ignored", "duplicate-member")
        return True

    for sample in group_by_keys(_members(shard, problems), handler=on_error):
        key = sample["__key__"]
        image = next((s for s in IMAGE_SUFFIXES if s in sample), None)
        if image is None:
            others = ", ".join("." + s for s in sample if not s.startswith("__")) or "none"
            report(f"sample {key!r} has no image (.jpg/.jpeg/.png/.webp; has {others}); "
                   "skipped", "missing-image")
            continue
        if CAPTION_SUFFIX not in sample:
            report(f"sample {key!r} has no .txt caption; skipped", "no-caption")
            continue
        caps, bad = _captions(sample[CAPTION_SUFFIX][2] or b"")
        if bad:
            report(f"sample {key!r}: {bad}; skipped", "bad-caption")
            continue
        if not caps:
            report(f"sample {key!r} has an empty caption; skipped", "empty-caption")
            continue
        if key in seen:
            report(f"sample {key!r} appears twice in the shard (members not adjacent); the "
                   "first is kept", "duplicate-image")
            continue
        seen.add(key)
        offset, size, _ = sample[image]
        # The stamp (size, time) that input fingerprints use: the member's size, its shard's time.
        records.append(Record(id=f"{label}/{key}",
                              image=TarMember(shard, f"{key}.{image}", offset, size),
                              captions=tuple(caps), stamp=(size, mtime)))
    return records, problems


def _scan_star(args: tuple[Path, str]) -> tuple[list[Record], list[Problem]]:
    return _scan_shard(*args)


# Below this many shards a process pool costs more than it saves.
_POOL_MIN_SHARDS = 4


def load_shards(path: str | Path, shards: list[Path], *, strict: bool = False,
                workers: int | None = None) -> Dataset:
    """Records of every usable sample of ``shards``; bad samples become Problems naming the shard
    and key (``strict=True`` raises DataError on the first). Shards are scanned in a process
    pool of ``workers`` (default: all CPUs; tar headers are parsed in Python, about 0.2 ms a
    sample on one core); records keep shard order."""
    shards = [s.resolve() for s in shards]
    root = Path(os.path.commonpath([str(s.parent) for s in shards]))
    jobs = [(s, _shard_label(s, root)) for s in shards]
    n = workers or len(os.sched_getaffinity(0))
    if strict or n == 1 or len(shards) < _POOL_MIN_SHARDS:
        results = (_scan_shard(*job) for job in jobs)
        pool = None
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        pool = ProcessPoolExecutor(max_workers=min(n, len(shards)), mp_context=ctx)
        results = pool.map(_scan_star, jobs)
    records: list[Record] = []
    problems: list[Problem] = []
    try:
        for recs, probs in progress(results, desc="reading shards", total=len(shards),
                                    unit="shard"):
            if strict and probs:
                raise DataError(str(probs[0]))
            records.extend(recs)
            problems.extend(probs)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return Dataset(records=records, source=Path(str(path)), format="webdataset",
                   image_root=root, problems=problems)


def shards_of(ds: Dataset) -> list[Path]:
    """The shards a WebDataset ``Dataset``'s records come from, in order."""
    out: dict[Path, None] = {}
    for r in ds.records:
        if isinstance(r.image, TarMember):
            out.setdefault(r.image.shard, None)
    return list(out)


def find_member(shard: str | Path, name: str) -> TarMember | None:
    """The member ``name`` of ``shard`` (as ``str(TarMember)`` wrote it: ``SHARD::NAME``), found
    by scanning the shard's headers only, or None when the shard has no such member or cannot
    be read. The report uses this to show images that a manifest names inside shards."""
    shard = Path(shard)
    try:
        with open(shard, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tf:
            while True:
                info = tf.next()
                if info is None:
                    return None
                tf.members = []  # headers only, as in _members
                if info.name == name and info.isreg():
                    return TarMember(shard, name, info.offset_data, info.size)
    except (OSError, tarfile.TarError):
        return None
