"""Named knowledge bases: index folders under the index root.

A knowledge base (KB) ``NAME`` is the index folder ``<root>/NAME`` (root: ``index/``,
``$WENYUAN_INDEX_ROOT`` or a given folder; see `rag.config.index_root`); the default
corpus is the KB ``default``. Its manifest records, under ``kb``, which files it holds
(by resolved path, with their content hash and document ids).

Every change rewrites the whole folder: the remaining documents' chunks and stored
vectors plus the new ones are written into a temporary sibling folder that is swapped
in with one rename (`Index.save`), so FAISS, BM25, the chunk store and the manifest
always change together and a failure leaves the previous KB intact.

Adding a file whose content is unchanged does nothing; adding a changed file embeds
only chunks whose text and context (under the same embedding model) are new.

Example:
    >>> create("notes")
    >>> add("notes", ["docs/"])
    >>> remove("notes", ["docs/old.md"])
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from rag import dense
from rag.chunking import chunk_documents
from rag.config import Config, index_root
from rag.corpus import alias_map, corpus_hash, expand_paths, load_documents
from rag.errors import RagError
from rag.index import (FORMAT_VERSION, Index, _read_jsonl, build_lock, clean_leftovers, file_sha256, replace_folder,
                       temp_folder)
from rag.kb_reuse import chunk_key, stored_vectors, token_lists
from rag.lexical import LexicalIndex
from rag.records import Chunk, Document

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class KBInfo:
    name: str
    documents: int
    chunks: int
    updated: str
    path: Path


@dataclass(frozen=True)
class DocInfo:
    """One document of a KB; ``pages`` is the last page its chunks cite (0: not paged, e.g. plain text)."""

    doc_id: str
    source: str
    title: str
    chunks: int
    pages: int = 0


@dataclass(frozen=True)
class FileChange:
    """What `add` did with one file: ``status`` is "added", "updated" or "unchanged"."""

    path: str
    status: str
    documents: int
    chunks: int = 0
    embedded: int = 0


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise RagError(f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '-' or '_', "
                       "starting with a letter or digit (e.g. 'work-notes')")
    return name


def kb_dir(name: str, root: str | Path | None = None) -> Path:
    """The folder of KB ``name`` (which need not exist)."""
    return index_root(root) / validate_name(name)


def names(root: str | Path | None = None) -> list[str]:
    """Names of the existing KBs under the root, sorted."""
    base = index_root(root)
    if not base.is_dir():
        return []
    for old in base.glob(".*.old-*"):  # a KB caught between the two renames of a killed fallback swap
        if _NAME.match(name := old.name[1:].rsplit(".old-", 1)[0]):
            _recover(base / name)
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "manifest.json").exists())


def require(name: str, root: str | Path | None = None) -> Path:
    """The folder of the existing KB ``name``; an unknown name is an error listing the known ones."""
    folder = kb_dir(name, root)
    _recover(folder)
    if not (folder / "manifest.json").exists():
        known = ", ".join(names(root)) or "none yet"
        fix = "build it with `rag index build`" if name == "default" else f"create it with `rag kb create {name}`"
        raise RagError(f"no knowledge base {name!r} under {index_root(root)} (existing: {known}); {fix}")
    return folder


def _recover(folder: Path) -> None:
    """Put back a KB a save killed mid-swap left in ``.<name>.old-<pid>`` (the fallback swap, e.g. macOS)."""
    if (folder / "manifest.json").exists() or not any(folder.parent.glob(f".{folder.name}.old-*/manifest.json")):
        return
    try:
        with build_lock(folder):
            clean_leftovers(folder)
    except RagError:  # another build is writing it now: it restores or replaces the folder itself
        pass


def read_manifest(folder: Path) -> dict:
    """The manifest of the knowledge-base folder ``folder`` (its files, counts and settings)."""
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def create(name: str, root: str | Path | None = None, config: Config | None = None) -> Path:
    """Create the empty KB ``name``; an existing name is an error."""
    folder = kb_dir(name, root)
    if (folder / "manifest.json").exists():
        raise RagError(f"knowledge base {name!r} already exists at {folder}; add files with `rag kb add {name} PATHS...`")
    config = config or Config()
    with build_lock(folder):
        clean_leftovers(folder)
        if (folder / "manifest.json").exists():  # restored from a killed save's leftover, or created meanwhile
            raise RagError(f"knowledge base {name!r} already exists at {folder}; add files with `rag kb add {name} PATHS...`")
        _write(folder, name, config, {"embedding": {"model": config.embedding.model}}, [], [], None, {}, [])
    return folder


def list_kbs(root: str | Path | None = None) -> list[KBInfo]:
    out = []
    for name in names(root):
        folder = kb_dir(name, root)
        m = read_manifest(folder)
        counts = m.get("counts", {})
        out.append(KBInfo(name, counts.get("documents", 0), counts.get("chunks", 0),
                          m.get("kb", {}).get("updated") or m.get("created", ""), folder))
    return out


def documents(name: str, root: str | Path | None = None) -> list[DocInfo]:
    """The documents of KB ``name``: id, source file, title, number of chunks and pages."""
    folder = require(name, root)
    if not read_manifest(folder).get("counts", {}).get("documents"):
        return []
    per_doc: Counter = Counter()
    pages: dict[str, int] = {}
    for c in _read_jsonl(folder / "chunks.jsonl", Chunk):
        per_doc[c.doc_id] += 1
        page = c.location.get("page") if isinstance(c.location, dict) else None
        if isinstance(page, int):
            pages[c.doc_id] = max(pages.get(c.doc_id, 0), page)
    return [DocInfo(d.id, d.source, d.title, per_doc[d.id], pages.get(d.id, 0))
            for d in _read_jsonl(folder / "documents.jsonl", Document)]


def search_dirs(kbs: str | Iterable[str], root: str | Path | None = None) -> list[Path]:
    """Folders of the named KBs, ready to load; unknown or empty KBs are errors that say what to do."""
    kbs = [kbs] if isinstance(kbs, str) else list(kbs)
    if not kbs:
        raise RagError("name at least one knowledge base (see `rag kb list`)")
    folders = []
    for name in dict.fromkeys(kbs):
        folder = require(name, root)
        if not read_manifest(folder).get("counts", {}).get("chunks"):
            raise RagError(f"knowledge base {name!r} has no documents yet; add some with `rag kb add {name} PATHS...`")
        folders.append(folder)
    return folders


def delete(name: str, root: str | Path | None = None) -> Path:
    """Delete KB ``name`` and everything in its folder."""
    folder = require(name, root)
    with build_lock(folder):
        trash = folder.parent / f".{folder.name}.deleted"
        shutil.rmtree(trash, ignore_errors=True)
        folder.rename(trash)  # one rename: the KB is gone at once, even if the removal below is cut short
        shutil.rmtree(trash, ignore_errors=True)
    return folder


def _state(folder: Path) -> tuple[dict, Index | None]:
    manifest = read_manifest(folder)
    if not manifest.get("counts", {}).get("chunks"):
        return manifest, None
    return manifest, Index.load(folder)


def _config_for(manifest: dict, config: Config | None) -> Config:
    if config is not None:
        return config
    return Config().with_build_settings(manifest["config"]) if manifest.get("config") else Config()


def add(name: str, paths: Iterable[str | Path], config: Config | None = None,
        embedder_factory: Callable[[], object] | None = None, root: str | Path | None = None,
        reserved_ids: Iterable[str] = (), on_file: Callable[[Path, int, int], None] | None = None,
        read: Mapping[str, Sequence[Document]] | None = None) -> list[FileChange]:
    """Add files (or folders of them) to KB ``name``; a changed file replaces its previous version.

    ``reserved_ids``: ids taken elsewhere (e.g. by indexes searched together with this KB);
    a new document claiming one is renamed as `rag.corpus.load_documents` does.
    ``on_file(path, i, n)`` is called before the i-th of n files is read (for progress bars:
    reading a scanned PDF runs OCR and is the slow part).

    Only chunks never embedded before under this model are embedded; an unchanged file is
    reported "unchanged" and costs nothing. All files are read before the KB is touched.

    ``read``: documents the caller already read from some of the files, by resolved path
    (with `rag.corpus.load_documents`, these ``reserved_ids`` and the KB's corpus settings),
    so a file parsed to validate it is not parsed (OCR'd) again.
    """
    folder = require(name, root)
    reserved_ids = set(reserved_ids)
    files = list(dict.fromkeys(p.resolve() for p in expand_paths(paths)))
    with build_lock(folder):
        clean_leftovers(folder)
        manifest, old = _state(folder)
        config = _config_for(manifest, config)
        kb_files: dict = dict(manifest.get("kb", {}).get("files", {}))
        docs = list(old.documents) if old else []
        replaced: set[str] = set()
        changes, new_docs = [], []
        for i, path in enumerate(files):
            if on_file is not None:
                on_file(path, i, len(files))
            key, digest = str(path), file_sha256(path)
            entry = kb_files.get(key)
            if entry and entry.get("sha256") == digest:
                changes.append(FileChange(key, "unchanged", len(entry.get("docs", []))))
                continue
            gone = set(entry["docs"]) if entry else set()
            replaced |= gone
            docs = [d for d in docs if d.id not in gone]
            if read is not None and key in read:
                got = list(read[key])
            else:
                got = load_documents([path], config.corpus.csv_text_column, config.corpus.max_file_bytes,
                                     reserved_ids=reserved_ids)
            got = _unique_ids(got, set(alias_map(docs)), key)  # also sets each document's source to the path
            docs.extend(got)
            new_docs.extend(got)
            kb_files[key] = {"sha256": digest, "docs": [d.id for d in got], "added": _now()}
            changes.append(FileChange(key, "updated" if entry else "added", len(got)))
        if not new_docs:
            return changes
        new_ids = {d.id for d in new_docs}
        kept = [c for c in (old.chunks if old else []) if c.doc_id not in replaced and c.doc_id not in new_ids]
        fresh = chunk_documents(new_docs, config.chunking.max_chars, config.chunking.overlap_sentences,
                                config.chunking.context_chars)
        chunks = kept + fresh
        reuse = stored_vectors(manifest, old)
        model = config.embedding.model
        todo = [i for i, c in enumerate(chunks) if chunk_key(c, model) not in reuse]
        embedder = None
        new = None
        if todo:
            if embedder_factory is None:
                from rag.embedding import Embedder

                embedder = Embedder(config.embedding)
            else:
                embedder = embedder_factory()
            new = np.asarray(embedder.embed_passages([chunks[i].text for i in todo]), dtype=np.float32)
        dim = new.shape[1] if new is not None else old.dimension
        vectors = np.zeros((len(chunks), dim), dtype=np.float32)
        for i, c in enumerate(chunks):
            k = chunk_key(c, model)
            if k in reuse:
                vectors[i] = reuse[k]
        if todo:
            vectors[todo] = new
        embedding = {"model": model, "dimension": dim, "query_prefix": config.embedding.query_prefix,
                     "passage_prefix": config.embedding.passage_prefix,
                     "engine": getattr(embedder, "engine", None) if embedder is not None
                     else manifest.get("embedding", {}).get("engine")}
        _write(folder, name, config, {"embedding": embedding}, docs, chunks, vectors, kb_files,
               token_lists(folder, old, chunks))
    per_file = Counter()
    owner = {d: f for f, e in kb_files.items() for d in e["docs"]}
    done = set(todo)
    for i, c in enumerate(chunks):
        if c.doc_id in new_ids:
            per_file[(owner[c.doc_id], "chunks")] += 1
            per_file[(owner[c.doc_id], "embedded")] += i in done
    return [ch if ch.status == "unchanged" else dataclasses.replace(
        ch, chunks=per_file[(ch.path, "chunks")], embedded=per_file[(ch.path, "embedded")]) for ch in changes]


def remove(name: str, targets: Iterable[str], root: str | Path | None = None) -> list[str]:
    """Remove documents (doc ids, aliases or source paths) from KB ``name``, all or none; return the removed ids."""
    folder = require(name, root)
    targets = list(targets)
    if not targets:
        raise RagError(f"name the documents to remove (doc ids or paths; see `rag kb docs {name}`)")
    with build_lock(folder):
        clean_leftovers(folder)
        manifest, old = _state(folder)
        docs = list(old.documents) if old else []
        ids = alias_map(docs)
        kb_files: dict = dict(manifest.get("kb", {}).get("files", {}))
        by_source: dict[str, list[str]] = {}
        for d in docs:
            by_source.setdefault(str(Path(d.source).resolve()) if d.source else "", []).append(d.id)
        gone: list[str] = []
        for t in targets:
            if t in ids:
                hit = [ids[t]]
            else:
                hit = by_source.get(str(Path(t).expanduser().resolve()), [])
            if not hit:
                raise RagError(f"no document {t!r} in knowledge base {name!r}; nothing was removed. "
                               f"See its doc ids and paths with `rag kb docs {name}`")
            gone.extend(h for h in hit if h not in gone)
        for key, entry in list(kb_files.items()):
            left = [d for d in entry["docs"] if d not in gone]
            if not left:
                del kb_files[key]
            elif len(left) < len(entry["docs"]):  # partly removed: adding the file again restores it
                kb_files[key] = dict(entry, docs=left, sha256=None)
        keep = [i for i, c in enumerate(old.chunks) if c.doc_id not in gone] if old else []
        chunks = [old.chunks[i] for i in keep]
        vectors = np.asarray(old.vectors[keep], dtype=np.float32) if old and keep else None
        _write(folder, name, _config_for(manifest, None), {"embedding": manifest.get("embedding", {})},
               [d for d in docs if d.id not in gone], chunks, vectors, kb_files, token_lists(folder, old, chunks))
    return gone


def _unique_ids(docs: list[Document], taken: set[str], source: str) -> list[Document]:
    """``docs`` with ids (and aliases) not in ``taken``: a clash gets the suffix ``~2``, ``~3``…"""
    out = []
    for d in docs:
        doc_id, n = d.id, 2
        while doc_id in taken:
            doc_id, n = f"{d.id}~{n}", n + 1
        taken.add(doc_id)
        aliases = tuple(a for a in d.aliases if a not in taken)
        taken.update(aliases)
        out.append(dataclasses.replace(d, id=doc_id, aliases=aliases, source=source))
    return out


def _write(folder: Path, name: str, config: Config, extra: dict, docs: list[Document], chunks: list[Chunk],
           vectors: np.ndarray | None, kb_files: dict, tokens: list[list[str]]) -> None:
    """Write the KB's new version into a temporary folder and swap it in (call holding the build lock).

    ``tokens``: the chunks' BM25 tokens (`token_lists`), saved with the index for the next change.
    """
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": _now(),
        **extra,
        "chunking": dataclasses.asdict(config.chunking),
        "lexical": {"engine": "bm25s", "tokenizer": "jieba.cut_for_search"},
        "corpus_hash": corpus_hash(docs),
        "sources": sorted(kb_files),
        "counts": {"documents": len(docs), "chunks": len(chunks), "aliases": sum(len(d.aliases) for d in docs)},
        "config": config.to_dict(),
        "kb": {"name": name, "updated": _now(), "files": kb_files},
    }
    if chunks:
        faiss_type = dense.choose_type(config.index.faiss_type, len(chunks))
        faiss_index = dense.build_faiss(vectors, faiss_type)
        manifest.update(faiss_type=faiss_type, faiss=dense.describe(faiss_index), build_engine="local")
        lexical = LexicalIndex.from_tokens(tokens, keep_tokens=True)
        Index(manifest, docs, chunks, vectors, faiss_index, lexical).save(folder)
        return
    tmp = temp_folder(folder)  # no documents: a manifest alone (FAISS and BM25 need at least one chunk)
    try:
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
