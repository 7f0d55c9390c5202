"""A self-describing index folder: manifest, FAISS file, BM25 index, chunk store.

Layout of ``index/<name>/``::

    manifest.json    format version, embedding model + dimension, chunking, counts, hashes
    dense.faiss      FAISS index over passage embeddings (row i = chunk i)
    vectors.npy      the passage embeddings, reused when the corpus changes little
    lexical/         bm25s index over jieba tokens (posting lists + per-token maximum score)
    chunks.jsonl     one Chunk per line, in index order (read on demand: rag.store)
    documents.jsonl  one Document per line (with aliases)
    *.offsets.npy    where each line of the two starts

Writes are atomic: a new index is built in a temporary sibling folder and
renamed into place, so an interrupted build leaves the previous index intact.
A lock file stops two builds from writing the same folder at once.
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from rag import dense, store
from rag.errors import IndexLoadError, RagError
from rag.lexical import LexicalIndex
from rag.records import Chunk, Document

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FILES = ("dense.faiss", "vectors.npy", "chunks.jsonl", "documents.jsonl")
REBUILD_HINT = "rebuild it with `rag index build --index-dir {dir}` (delete the folder first if the error persists)"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_jsonl(path: Path, records) -> None:
    store.write(path, records)


def _read_jsonl(path: Path, cls) -> list:
    with open(path, encoding="utf-8") as f:
        return [store.from_dict(cls, json.loads(line)) for line in f]


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # old kernel or file system
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_leftovers(index_dir: Path) -> None:
    """Undo what a killed save left beside ``index_dir``; call while holding `build_lock`.

    A save killed between its two renames (only where no atomic swap exists)
    leaves the previous index in ``.<name>.old-<pid>``: it is moved back.
    Temporary folders of killed saves are deleted.
    """
    index_dir = Path(index_dir)
    mine = {f".{index_dir.name}.tmp-{os.getpid()}", f".{index_dir.name}.old-{os.getpid()}"}
    olds = sorted(index_dir.parent.glob(f".{index_dir.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not index_dir.exists() and olds and (olds[-1] / "manifest.json").exists():
        logger.warning("restoring the index left at %s by an interrupted build", olds[-1])
        olds[-1].rename(index_dir)
    for p in [*index_dir.parent.glob(f".{index_dir.name}.tmp-*"), *index_dir.parent.glob(f".{index_dir.name}.old-*")]:
        if p.name not in mine and p.is_dir():
            logger.info("removing %s, left by an interrupted build", p)
            shutil.rmtree(p, ignore_errors=True)


@contextmanager
def build_lock(index_dir: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside the index folder; fail clearly if another build holds it."""
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = index_dir.parent / f".{index_dir.name}.lock"
    with open(lock_path, "w") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RagError(f"another build is writing {index_dir} (lock {lock_path} is held); wait for it to finish and try again") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def temp_folder(index_dir: Path) -> Path:
    """A fresh, empty temporary sibling of ``index_dir`` to write a new version into."""
    tmp = index_dir.parent / f".{index_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def replace_folder(tmp: Path, index_dir: Path) -> None:
    """Put the fully written folder ``tmp`` in place of ``index_dir`` in one atomic swap.

    Where no atomic swap exists, a kill between the two renames is undone by `clean_leftovers`.
    """
    if not index_dir.exists():
        tmp.rename(index_dir)
    elif _exchange(tmp, index_dir):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the previous index
    else:
        old = index_dir.parent / f".{index_dir.name}.old-{os.getpid()}"
        index_dir.rename(old)
        tmp.rename(index_dir)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(index_dir.parent)


@dataclasses.dataclass
class Index:
    """An index loaded in memory."""

    manifest: dict
    documents: Sequence[Document]  # a list, or a JsonlStore once loaded
    chunks: Sequence[Chunk]
    vectors: np.ndarray
    faiss_index: object
    lexical: LexicalIndex

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    def vector_rows(self, positions: Sequence[int]) -> np.ndarray:
        """The stored vectors of the chunks at ``positions``, as float32; from a loaded index they
        are read from its file row by row (rag.store: no map of the file grows with the rows read)."""
        rows = self._vector_file()
        if rows is not None:
            return rows.rows(positions).astype(np.float32, copy=False)
        return np.asarray(self.vectors[list(positions)], dtype=np.float32)

    def _vector_file(self) -> store.NpyRows | None:
        """A row reader of the file ``vectors`` maps, while it maps that whole file."""
        v = self.vectors
        if not isinstance(v, np.memmap) or not v.filename:
            return None
        rows = self.__dict__.get("_rows")
        if rows is None or rows.path != Path(v.filename):
            rows = self.__dict__["_rows"] = store.NpyRows(v.filename)
        return rows if (rows.shape == v.shape and rows.start == v.offset and rows.dtype == v.dtype) else None

    def id_map(self) -> dict[str, str]:
        """Every document id and alias -> its canonical id (`rag.corpus.alias_map`), decoded once
        per loaded index: an upload beside a 100k-document index asks at every file."""
        ids = self.__dict__.get("_id_map")
        if ids is None:
            from rag.corpus import alias_map

            ids = self.__dict__["_id_map"] = alias_map(self.documents)
        return ids

    def aliases(self) -> dict[str, str]:
        """Alias -> canonical id of every document folded into another. Without decoding the
        documents when the manifest counts no aliases (a large corpus starts faster)."""
        counts = self.manifest.get("counts") if isinstance(self.manifest.get("counts"), dict) else {}
        if counts.get("aliases") == 0:
            return {}
        return {alias: doc.id for doc in self.documents for alias in doc.aliases}

    def save(self, index_dir: Path) -> None:
        """Write atomically: temp folder, then swap it with ``index_dir``.

        A failure or a kill at any point leaves the previous index loadable;
        leftovers of a killed save are removed by `clean_leftovers`.
        """
        index_dir = Path(index_dir)
        index_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_folder(index_dir)
        try:
            dense.save_faiss(self.faiss_index, tmp / "dense.faiss")
            np.save(tmp / "vectors.npy", np.asarray(self.vectors, dtype=np.float32))
            _write_jsonl(tmp / "chunks.jsonl", self.chunks)
            _write_jsonl(tmp / "documents.jsonl", self.documents)
            self.lexical.save(tmp / "lexical")
            manifest = dict(self.manifest, files={name: file_sha256(tmp / name) for name in FILES})
            (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
            for p in [tmp, *tmp.iterdir()]:
                if p.is_file():
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
            replace_folder(tmp, index_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.manifest = manifest
        logger.info("saved index with %d chunks to %s", len(self.chunks), index_dir)

    @classmethod
    def load(cls, index_dir: str | Path, embedding_model: str | None = None, verify_hashes: bool = False) -> "Index":
        """Load and check an index folder; raise IndexLoadError saying how to rebuild."""
        index_dir = Path(index_dir)
        hint = REBUILD_HINT.format(dir=index_dir)
        manifest_path = index_dir / "manifest.json"
        if not manifest_path.exists():
            left = sorted(index_dir.parent.glob(f".{index_dir.name}.old-*/manifest.json"))
            if left:
                hint = f"an interrupted build left the previous index in {left[-1].parent}; run the build again (`rag index build --index-dir {index_dir}`) to restore it"
            raise IndexLoadError(f"no index at {index_dir} (manifest.json missing); {hint}")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise IndexLoadError(f"{manifest_path} is unreadable ({e}); {hint}") from e
        if not isinstance(manifest, dict):
            raise IndexLoadError(f"{manifest_path} is not an index manifest (a JSON object); {hint}")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise IndexLoadError(f"index {index_dir} has format version {version!r}, this program reads up to {FORMAT_VERSION}; upgrade Wenyuan or {hint}")
        emb = manifest.get("embedding") if isinstance(manifest.get("embedding"), dict) else {}
        if embedding_model is not None and emb.get("model") != embedding_model:
            raise IndexLoadError(f"index {index_dir} was built with embedding model {emb.get('model')!r}, but {embedding_model!r} is configured; {hint}")
        for name in (*FILES, "lexical"):
            if not (index_dir / name).exists():
                raise IndexLoadError(f"index {index_dir} is missing {name}; {hint}")
        if verify_hashes:
            for name, digest in manifest.get("files", {}).items():
                if file_sha256(index_dir / name) != digest:
                    raise IndexLoadError(f"{index_dir / name} does not match its manifest hash (changed or corrupt); {hint}")
        try:
            chunks = store.JsonlStore(index_dir / "chunks.jsonl", Chunk)  # decoded on access, not at load
            documents = store.JsonlStore(index_dir / "documents.jsonl", Document)
            vectors = np.load(index_dir / "vectors.npy", mmap_mode="r")  # read on demand: large corpora need not fit in RAM
        except (OSError, ValueError, TypeError, EOFError) as e:
            raise IndexLoadError(f"index {index_dir} has an unreadable chunk store or vectors ({e}); {hint}") from e
        faiss_index = dense.load_faiss(index_dir / "dense.faiss")
        try:
            lexical = LexicalIndex.load(index_dir / "lexical")
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise IndexLoadError(f"index {index_dir} has an unreadable BM25 index in lexical/ ({e}); {hint}") from e
        counts = manifest.get("counts") if isinstance(manifest.get("counts"), dict) else {}
        n = counts.get("chunks")
        if not (n == len(chunks) == faiss_index.ntotal == len(vectors) == lexical.size):
            raise IndexLoadError(
                f"index {index_dir} is inconsistent: manifest says {n} chunks, chunk store has {len(chunks)}, "
                f"FAISS has {faiss_index.ntotal}, vectors {len(vectors)}, BM25 {lexical.size}; {hint}"
            )
        if vectors.ndim != 2 or vectors.shape[1] != emb.get("dimension") or faiss_index.d != emb.get("dimension"):
            raise IndexLoadError(f"index {index_dir}: vector dimension does not match the manifest ({emb.get('dimension')}); {hint}")
        if counts.get("documents") != len(documents):
            raise IndexLoadError(f"index {index_dir}: manifest says {counts.get('documents')} documents, store has {len(documents)}; {hint}")
        index = cls(manifest, documents, chunks, vectors, faiss_index, lexical)
        try:
            index._vector_file()  # what queries read: checked now, not at the first question
        except (OSError, ValueError) as e:
            raise IndexLoadError(f"index {index_dir} has unreadable vectors ({e}); {hint}") from e
        return index
