"""The in-memory shape of an image-caption dataset, shared by every format and stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence


@dataclass(frozen=True)
class Record:
    """One image and all its captions.

    ``id`` is stable across runs: the image path relative to the image root, with forward slashes
    (the annotation's own path string, normalised). ``image`` is the resolved absolute path; the
    image itself is opened lazily (``gitd.data.images.open_rgb``).
    """

    id: str
    image: Path
    captions: tuple[str, ...]
    row: int | None = None  # index of the first annotation row (or line) of this image
    # (size in bytes, mtime in ns) of the image file when the dataset was loaded: what the data
    # fingerprint covers, so a replaced image recomputes every stage that read it.
    stamp: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def longest_caption(self) -> str:
        # The GITD paper prompts with the longest caption; ties go to the first one.
        return max(self.captions, key=len)


@dataclass(frozen=True)
class Problem:
    """Something wrong with one place of the dataset: printed as ``file[:row N]: message``."""

    file: str
    message: str
    row: int | None = None
    kind: str = "error"  # a short class name, e.g. "missing-image", "empty-caption", "json"

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}: row {self.row}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict:
        return {"file": self.file, "row": self.row, "kind": self.kind, "problem": self.message}


@dataclass
class Dataset:
    """Records that passed validation, plus every problem found while loading them."""

    records: list[Record]
    source: Path
    format: str
    image_root: Path
    problems: list[Problem] = field(default_factory=list)
    split: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def subset(self, indices: Sequence[int]) -> "Dataset":
        return Dataset([self.records[i] for i in indices], self.source, self.format,
                       self.image_root, list(self.problems), self.split)
