"""The user's own documents: validated uploads kept in a knowledge base of their own.

Layout under the app's data folder (``--data-dir``)::

    files/     uploaded files that are part of the user KB
    uploads/   the KB ``uploads`` (see `rag.kb`), searched together with the default corpus
    staging/   one temporary folder per upload or removal, removed afterwards

An upload is validated and parsed in a fresh staging folder; only then are the files
moved into ``files/`` and added to the KB with `rag.kb.add` (only new chunks are
embedded). If that fails, ``files/`` is put back as it was and the KB, which changes
atomically, keeps its previous version. Removing a file removes its documents from the
KB (`rag.kb.remove`, an atomic swap) and the RAG serves the new version at once.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from rag import kb
from rag.corpus import SUPPORTED_SUFFIXES, load_documents
from rag.errors import CorpusError, RagError, UploadError
from rag.index import Index

logger = logging.getLogger(__name__)

KB_NAME = "uploads"
MAX_FILE_BYTES = 5_000_000
MAX_FILES = 20
_UNSAFE = re.compile(r"[^\w\-]+")  # \w keeps letters of any script, so Chinese names survive

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class UploadedFile:
    """One uploaded file as the KB holds it."""

    name: str
    documents: int
    chunks: int
    pages: int = 0  # last page its passages cite; 0 for files without pages (text, Markdown…)
    added: str = ""  # ISO time (UTC) the KB took this version of the file


def safe_filename(name: str) -> str:
    """Basename of ``name`` reduced to safe characters, with a lower-case supported suffix.

    Directory parts (``../``, absolute paths, Windows separators) are dropped.
    """
    base = PurePosixPath(str(name).replace("\\", "/")).name
    suffix = PurePosixPath(base).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UploadError(f"不支持的文件类型：{base or name!r}。请上传 {'、'.join(SUPPORTED_SUFFIXES)} 文件。")
    stem = _UNSAFE.sub("_", base[: -len(suffix)]).strip("_-")[:80]
    return f"{stem or 'document'}{suffix}"


class UserDocuments:
    """Uploads and the user KB of one app (shared by its sessions: a local, single-user app)."""

    def __init__(self, rag, data_dir: str | Path, max_files: int = MAX_FILES, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.rag = rag
        self.data_dir = Path(data_dir).resolve()
        self.files_dir = self.data_dir / "files"
        self.index_dir = kb.kb_dir(KB_NAME, self.data_dir)
        self.staging_dir = self.data_dir / "staging"
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        if not self.files_dir.is_dir():
            return []
        return sorted(p for p in self.files_dir.iterdir() if p.is_file() and p.suffix in SUPPORTED_SUFFIXES)

    def listing(self) -> list[UploadedFile]:
        """The uploaded files the KB holds, by name, with documents, chunks, pages and time added."""
        if not (self.index_dir / "manifest.json").exists():
            return []
        held = kb.read_manifest(self.index_dir).get("kb", {}).get("files", {})
        added = {Path(k).name: entry.get("added", "") for k, entry in held.items()}
        docs: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for d in kb.documents(KB_NAME, self.data_dir):
            entry = docs[Path(d.source).name]
            entry[0] += 1
            entry[1] += d.chunks
            entry[2] = max(entry[2], d.pages)
        return [UploadedFile(name, n, c, pages, added.get(name, "")) for name, (n, c, pages) in sorted(docs.items())]

    def restore(self) -> int:
        """Search the documents kept from earlier runs; unchanged ones are not re-embedded.

        ``files/`` is the record of what was uploaded: a file there that the KB lacks is
        added, and a KB entry whose file is gone (a removal cut short) is removed.
        """
        with self._lock:
            files = self.files()
            if not files and not (self.index_dir / "manifest.json").exists():
                return 0
            try:
                self._ensure_kb()
                held = {str(Path(k).resolve()) for k in kb.read_manifest(self.index_dir).get("kb", {}).get("files", {})}
                stale = sorted(held - {str(p.resolve()) for p in files})
                if stale:
                    kb.remove(KB_NAME, stale, self.data_dir)
                if files:
                    self._kb_add(files)
                self._serve()
            except RagError as e:
                logger.warning("could not load the user documents in %s: %s", self.index_dir, e)
                return 0
        return len(files)

    def add(self, uploads: Iterable[str | Path], progress: Progress | None = None) -> str:
        """Validate, stage and index ``uploads``; return a short summary (Chinese).

        Raises:
            UploadError / CorpusError: with a message naming the bad file; nothing is kept.
        """
        report = progress or (lambda fraction, desc: None)
        sources = [Path(u) for u in uploads]
        if not sources:
            raise UploadError("请先选择要上传的文件。")
        with self._lock:
            report(0.05, "校验文件")
            named = self._validate(sources)
            self.staging_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix="upload-", dir=self.staging_dir))
            backup = staging / "previous"
            moved: list[str] = []
            n = len(named)
            read: dict[str, list] = {}  # what validation parsed, handed to the KB: each file is read (OCR'd) once
            reserved = self._reserved_ids()
            try:
                for i, (name, src) in enumerate(named.items()):
                    # Reading is the slow part (a scanned PDF page goes through OCR), so one step per file.
                    report(0.05 + 0.45 * i / n, f"读取第 {i + 1}/{n} 个文件：{name}{_slow_hint(name)}")
                    shutil.copyfile(src, staging / name)
                    read[str((self.files_dir / name).resolve())] = self._check_one(staging / name, staging, reserved)
                report(0.5, "建立索引（新段落需要计算向量）")
                self._ensure_kb()
                self.files_dir.mkdir(parents=True, exist_ok=True)
                backup.mkdir()
                try:
                    for name in named:
                        if (self.files_dir / name).exists():
                            (self.files_dir / name).replace(backup / name)
                        (staging / name).replace(self.files_dir / name)
                        moved.append(name)
                    changes = self._kb_add(
                        [self.files_dir / name for name in named],
                        lambda path, i, total: report(0.5 + 0.4 * i / total, f"建立索引：第 {i + 1}/{total} 个文件 {path.name}"),
                        read, reserved,
                    )
                except BaseException as e:
                    for name in moved:  # put files/ back as it was; the KB did not change
                        (self.files_dir / name).unlink(missing_ok=True)
                        if (backup / name).exists():
                            (backup / name).replace(self.files_dir / name)
                    if isinstance(e, RagError):
                        raise type(e)(_strip_dir(_strip_dir(str(e), self.files_dir), staging)) from e
                    raise
                report(0.95, "更新检索")
                self._serve()
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        counts = kb.read_manifest(self.index_dir).get("counts", {})
        embedded = sum(c.embedded for c in changes)
        return (
            f"已添加 {len(named)} 个文件：{'、'.join(named)}。我的文档共 {len(self.files())} 个文件、"
            f"{counts.get('documents', '?')} 篇文档、{counts.get('chunks', '?')} 个段落（本次新计算 {embedded} 个）。"
        )

    def remove(self, name: str | None) -> str:
        """Remove the uploaded file ``name`` from the KB and from retrieval; return a summary (Chinese).

        Raises:
            UploadError: no such uploaded file (nothing changes).
        """
        if not name or not str(name).strip():
            raise UploadError("请先选择要移除的文件。")
        name = PurePosixPath(str(name).replace("\\", "/")).name
        with self._lock:
            path = self.files_dir / name
            known = [p.name for p in self.files()]
            if name not in known:
                have = "、".join(known) or "（还没有上传文档）"
                raise UploadError(f"我的文档里没有 {name}，未移除任何文件。现有文件：{have}")
            self.staging_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix="remove-", dir=self.staging_dir))
            try:
                path.replace(staging / name)  # out of files/ first: a cut-short removal is finished by restore()
                try:
                    held = kb.read_manifest(self.index_dir).get("kb", {}).get("files", {}) if self.index_dir.exists() else {}
                    if str(path.resolve()) in {str(Path(k).resolve()) for k in held}:
                        kb.remove(KB_NAME, [str(path.resolve())], self.data_dir)
                except BaseException:
                    (staging / name).replace(path)
                    raise
                self._serve()
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        counts = kb.read_manifest(self.index_dir).get("counts", {})
        return (
            f"已移除 {name}。我的文档还有 {len(self.files())} 个文件、"
            f"{counts.get('documents', 0)} 篇文档、{counts.get('chunks', 0)} 个段落。"
        )

    def _ensure_kb(self) -> None:
        if not (self.index_dir / "manifest.json").exists():
            kb.create(KB_NAME, self.data_dir, self.rag.config)

    def _reserved_ids(self) -> set[str]:
        """Ids of the documents searched beside the user KB: an upload claiming one is renamed."""
        return {i for index in self.rag.indexes for i in index.id_map()}

    def _kb_add(self, paths: list[Path], on_file: Callable[[Path, int, int], None] | None = None,
                read: dict[str, list] | None = None, reserved: set[str] | None = None) -> list[kb.FileChange]:
        return kb.add(KB_NAME, paths, self.rag.config, lambda: self.rag.embedder, self.data_dir,
                      reserved_ids=self._reserved_ids() if reserved is None else reserved, on_file=on_file, read=read)

    def _serve(self) -> None:
        """Make the RAG search the KB's current version (or nothing, when it is empty)."""
        rag = self.rag
        key = str(self.index_dir.resolve())
        try:
            has_chunks = kb.read_manifest(self.index_dir).get("counts", {}).get("chunks")
            index = Index.load(self.index_dir, embedding_model=rag.config.embedding.model) if has_chunks else None
        except BaseException:
            rag.search_also(key, None)  # never keep serving a version that may hold removed documents
            raise
        rag.search_also(key, index)

    def _validate(self, sources: list[Path]) -> dict[str, Path]:
        named: dict[str, Path] = {}
        for src in sources:
            name = safe_filename(src.name)
            try:
                size = src.stat().st_size
            except OSError as e:
                raise UploadError(f"无法读取上传的文件 {name}：{e}") from e
            if size > self.max_file_bytes:
                raise UploadError(f"{name} 有 {size / 1e6:.1f} MB，超过每个文件 {self.max_file_bytes / 1e6:.0f} MB 的上限；请拆分后再上传。")
            if size == 0:
                raise UploadError(f"{name} 是空文件。")
            named[name] = src
        total = len({p.name for p in self.files()} | set(named))
        if total > self.max_files:
            raise UploadError(f"我的文档最多 {self.max_files} 个文件，这次上传后会有 {total} 个；请减少文件数量。")
        return named

    def _check_one(self, path: Path, staging: Path, reserved: set[str]) -> list:
        """Parse one file alone so an error names it before anything is embedded; its documents."""
        try:
            return load_documents([path], self.rag.config.corpus.csv_text_column, self.max_file_bytes,
                                  reserved_ids=reserved)
        except CorpusError as e:
            raise UploadError(f"文件 {path.name} 无法使用：{_strip_dir(str(e), staging)}") from e


def _slow_hint(name: str) -> str:
    return "（扫描页需要 OCR 识别，可能较慢）" if name.endswith(".pdf") else ""


def _strip_dir(message: str, folder: Path) -> str:
    """Library messages name staging paths; show only the file names."""
    return message.replace(f"{folder}/", "").replace(str(folder), "")
