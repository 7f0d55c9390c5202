"""Record stores of an index folder: JSON lines, and vector rows, read on demand.

``chunks.jsonl`` and ``documents.jsonl`` hold one record a line; beside each,
``<name>.offsets.npy`` holds the byte offset where every line starts (and the
file size last). Loading opens the file and reads the offsets, so a served index
of a million chunks costs a few megabytes of memory and no parsing at start-up;
a record is decoded when it is asked for (``store[i]``). :class:`NpyRows` reads
the rows of ``vectors.npy`` a query needs the same way.

Both read with ``os.pread`` (safe from many threads), not through a memory map: the
kernel keeps a file written in one go in large page-cache folios, and a mapped
read of one record then adds a whole folio (about 2 MB) to the process's memory.
Through maps, 80 searches of a 1M-chunk synthetic index mapped 2.9 GB of its
``vectors.npy`` (float64 there, twice a real index's) and 208 MB of its chunk store;
read this way, the pages stay in the page cache, shared and reclaimable
(benchmarks/serve_memory.py: RSS beyond the models 2,020 -> 1,026 MB).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Generic, Iterable, Iterator, Sequence, TypeVar, overload

import numpy as np

from rag.errors import IndexLoadError

T = TypeVar("T")
logger = logging.getLogger(__name__)
SAMPLE = 1000  # line starts checked at load; every record is checked when decoded


def offsets_path(path: Path) -> Path:
    return path.with_name(path.stem + ".offsets.npy")


def from_dict(cls, d: dict):
    """A record from its JSON object (JSON has no tuples)."""
    if "aliases" in d:
        d["aliases"] = tuple(d["aliases"])
    if "spans" in d:  # indexes older than located spans have no key
        d["spans"] = tuple((s, e, loc) for s, e, loc in d["spans"])
    return cls(**d)


def write(path: Path, records: Iterable) -> int:
    """Write records as JSON lines, and their line offsets beside; return the count."""
    offsets = [0]
    with open(path, "wb") as f:
        for r in records:
            line = (json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            offsets.append(offsets[-1] + len(line))
    np.save(offsets_path(path), np.asarray(offsets, dtype=np.int64))
    return len(offsets) - 1


def _scan_offsets(path: Path, block: int = 1 << 24) -> np.ndarray:
    """Line offsets of a JSON-lines file without a sidecar (indexes written before stores)."""
    starts = [np.zeros(1, dtype=np.int64)]
    pos = 0
    with open(path, "rb") as f:
        while data := f.read(block):
            starts.append(np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10).astype(np.int64) + pos + 1)
            pos += len(data)
    out = np.concatenate(starts)
    if pos and out[-1] != pos:
        raise ValueError(f"{path.name} ends in the middle of a record (cut short?)")
    return out


class _PositionalFile:
    """An open read-only descriptor of ``self.path`` for ``os.pread``: closed with the object,
    left out of a pickle and opened again on unpickling."""

    path: Path

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self) -> None:
        fd = self.__dict__.pop("_fd", None)
        if fd is not None:
            os.close(fd)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_fd"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()


class JsonlStore(_PositionalFile, Sequence[T], Generic[T]):
    """Read-only sequence of the records in a JSON-lines file, decoded on access."""

    def __init__(self, path: str | Path, cls: type[T]) -> None:
        self.path, self.cls = Path(path), cls
        side = offsets_path(self.path)
        self.offsets = np.load(side) if side.exists() else _scan_offsets(self.path)
        self._open()
        if not self._consistent():  # the sidecar is a cache: a file changed after it is read again
            logger.warning("%s does not describe %s; finding the line starts again", side.name, self.path.name)
            self.offsets = _scan_offsets(self.path)

    def _consistent(self) -> bool:
        o, size = self.offsets, self.path.stat().st_size
        if o.ndim != 1 or len(o) < 1 or o[0] != 0 or o[-1] != size or (len(o) > 1 and not (np.diff(o) > 0).all()):
            return False
        at = np.unique(np.linspace(1, len(o) - 1, min(SAMPLE, len(o) - 1), dtype=np.int64)) if len(o) > 1 else []
        return all(os.pread(self._fd, 1, int(o[i]) - 1) == b"\n" for i in at)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _decode(self, i: int) -> T:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        raw = os.pread(self._fd, end - start, start)
        try:
            if len(raw) != end - start:
                raise ValueError(f"the file ends at byte {start + len(raw)}, inside the record")
            return from_dict(self.cls, json.loads(raw.decode("utf-8")))
        except (ValueError, TypeError) as e:  # UnicodeDecodeError is a ValueError
            raise IndexLoadError(f"{self.path}: record {i} is unreadable ({e}); rebuild the index with `rag index build`") from e

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._decode(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} of {n}")
        return self._decode(i % n)

    def __iter__(self) -> Iterator[T]:
        for i in range(len(self)):
            yield self._decode(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (JsonlStore, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"JsonlStore({str(self.path)!r}, {self.cls.__name__}, {len(self)} records)"


class NpyRows(_PositionalFile):
    """Rows of a 2-D ``.npy`` array (C order), read with ``os.pread``: the few rows a query
    needs, without mapping the file (see the module notes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.start = f.tell()
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise ValueError(f"{self.path.name} is not a 2-D C-order numeric array")
        self.shape, self.dtype = shape, dtype
        self.row_bytes = shape[1] * dtype.itemsize
        if self.path.stat().st_size < self.start + shape[0] * self.row_bytes:
            raise ValueError(f"{self.path.name} is shorter than its {shape[0]} x {shape[1]} header says (cut short?)")
        self._open()

    def rows(self, positions: Sequence[int]) -> np.ndarray:
        out = np.empty((len(positions), self.shape[1]), dtype=self.dtype)
        for j, p in enumerate(positions):
            if not 0 <= p < self.shape[0]:
                raise IndexError(f"row {p} of {self.shape[0]}")
            out[j] = np.frombuffer(os.pread(self._fd, self.row_bytes, self.start + int(p) * self.row_bytes), dtype=self.dtype)
        return out
