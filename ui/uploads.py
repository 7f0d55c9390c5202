"""The user's own documents: validated uploads indexed into a separate index.

Layout under the app's data folder::

    files/     uploaded files that are part of the user index
    index/     the user index (searched together with the default corpus)
    staging/   one temporary folder per upload, removed afterwards

An upload is copied into a fresh staging folder together with the files
already kept, the index is rebuilt from that folder, and only when the build
succeeds are the new files moved into ``files/``. A bad file therefore leaves
both ``files/`` and the previous index as they were.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from rag.corpus import SUPPORTED_SUFFIXES, load_documents
from rag.errors import CorpusError, RagError, UploadError

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 5_000_000
MAX_FILES = 20
_UNSAFE = re.compile(r"[^\w\-]+")  # \w keeps letters of any script, so Chinese names survive

Progress = Callable[[float, str], None]


def safe_filename(name: str) -> str:
    """Basename of ``name`` reduced to safe characters, with a lower-case supported suffix.

    Directory parts (``../``, absolute paths, Windows separators) are dropped.
    """
    base = PurePosixPath(str(name).replace("\\", "/")).name
    suffix = PurePosixPath(base).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UploadError(f"不支持的文件类型：{base or name!r}。请上传 .txt、.md、.jsonl 或 .csv 文件。")
    stem = _UNSAFE.sub("_", base[: -len(suffix)]).strip("_-")[:80]
    return f"{stem or 'document'}{suffix}"


class UserDocuments:
    """Uploads and the user index of one app (shared by its sessions: a local, single-user app)."""

    def __init__(self, rag, data_dir: str | Path, max_files: int = MAX_FILES, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.rag = rag
        self.data_dir = Path(data_dir).resolve()
        self.files_dir = self.data_dir / "files"
        self.index_dir = self.data_dir / "index"
        self.staging_dir = self.data_dir / "staging"
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        if not self.files_dir.is_dir():
            return []
        return sorted(p for p in self.files_dir.iterdir() if p.is_file() and p.suffix in SUPPORTED_SUFFIXES)

    def restore(self) -> int:
        """Search the documents kept from earlier runs; unchanged ones are not re-embedded."""
        files = self.files()
        if not files:
            return 0
        try:
            self.rag.add_documents(files, self.index_dir)
        except RagError as e:
            logger.warning("could not load the user documents in %s: %s", self.files_dir, e)
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
            try:
                for old in self.files():
                    shutil.copy2(old, staging / old.name)
                for i, (name, src) in enumerate(named.items()):
                    shutil.copyfile(src, staging / name)
                    self._check_one(staging / name, staging)
                    report(0.1 + 0.2 * (i + 1) / len(named), f"已校验 {name}")
                report(0.35, "建立索引（新段落需要计算向量）")
                try:
                    index = self.rag.add_documents(sorted(staging.iterdir()), self.index_dir)
                except RagError as e:
                    raise type(e)(_strip_dir(str(e), staging)) from e
                report(0.95, "保存文件")
                self.files_dir.mkdir(parents=True, exist_ok=True)
                for name in named:
                    (staging / name).replace(self.files_dir / name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        counts = index.manifest.get("counts", {})
        embedded = index.manifest.get("timings", {}).get("embedded", 0)
        return (
            f"已添加 {len(named)} 个文件：{'、'.join(named)}。我的文档共 {len(self.files())} 个文件、"
            f"{counts.get('documents', '?')} 篇文档、{counts.get('chunks', '?')} 个段落（本次新计算 {embedded} 个）。"
        )

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

    def _check_one(self, path: Path, staging: Path) -> None:
        """Parse one file alone so an error names it before anything is embedded."""
        try:
            load_documents([path], self.rag.config.corpus.csv_text_column, self.max_file_bytes)
        except CorpusError as e:
            raise UploadError(f"文件 {path.name} 无法使用：{_strip_dir(str(e), staging)}") from e


def _strip_dir(message: str, folder: Path) -> str:
    """Library messages name staging paths; show only the file names."""
    return message.replace(f"{folder}/", "").replace(str(folder), "")
