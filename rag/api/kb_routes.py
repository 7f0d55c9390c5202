"""Knowledge-base routes mirroring ``rag kb`` (`rag.kb`), under ``/v1/kbs``.

``GET /v1/kbs`` (list with counts), ``POST /v1/kbs`` (create ``{"name"}``),
``DELETE /v1/kbs/{name}``, ``GET /v1/kbs/{name}/documents``,
``POST /v1/kbs/{name}/documents`` (multipart files, field ``files``) and
``DELETE /v1/kbs/{name}/documents/{doc_id}``. Uploaded files are kept under
``<index root>/.uploads/<name>/`` (the KB records its files by path). After a
change the KB's cached pipeline is dropped, so the next question reads the new index.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from rag.api.deps import ApiError, authorize, state_of
from rag.errors import RagError

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/kbs", dependencies=[Depends(authorize)], tags=["Knowledge bases"])

UPLOADS = ".uploads"


class CreateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str


def _registry(request: Request):
    kbs = state_of(request).kbs
    if kbs.root is None:
        raise ApiError(404, "this server was started without an index root, so it has no knowledge-base routes",
                       "no_index_root")
    return kbs


def _valid(name: str) -> str:
    from rag import kb

    try:
        return kb.validate_name(name)
    except RagError as e:
        raise ApiError(400, str(e), "invalid_name") from e


def _existing(kbs, name: str) -> str:
    from rag import kb

    _valid(name)
    known = kb.names(kbs.root)
    if name not in known:
        raise ApiError(404, f"no knowledge base {name!r} (existing: {', '.join(known) or 'none yet'}); "
                            "create it with POST /v1/kbs", "kb_not_found")
    return name


def _uploads(kbs, name: str) -> Path:
    return kbs.root / UPLOADS / name


def _info_json(info) -> dict:
    return {"name": info.name, "documents": info.documents, "chunks": info.chunks, "updated": info.updated}


@router.get("", summary="The knowledge bases with their counts (rag kb list)")
async def list_kbs(request: Request):
    kbs = _registry(request)
    return {"object": "list", "data": [_info_json(i) for i in kbs.kb_infos()]}


@router.post("", status_code=201, summary="Create an empty knowledge base (rag kb create)")
async def create_kb(body: CreateRequest, request: Request):
    from rag import kb

    kbs = _registry(request)
    name = _valid(body.name)
    if name in kb.names(kbs.root):
        raise ApiError(409, f"knowledge base {name!r} already exists; add files with POST /v1/kbs/{name}/documents",
                       "kb_exists")
    try:
        await run_in_threadpool(kb.create, name, kbs.root, kbs.config)
    except RagError as e:
        raise ApiError(400, str(e), "kb_error") from e
    await run_in_threadpool(kbs.changed, name)
    return {"name": name, "documents": 0, "chunks": 0}


@router.delete("/{name}", summary="Delete a knowledge base and its index (rag kb delete)")
async def delete_kb(name: str, request: Request):
    from rag import kb

    kbs = _registry(request)
    _existing(kbs, name)
    try:
        await run_in_threadpool(kb.delete, name, kbs.root)
    except RagError as e:
        raise ApiError(400, str(e), "kb_error") from e
    await run_in_threadpool(kbs.changed, name, True)
    shutil.rmtree(_uploads(kbs, name), ignore_errors=True)
    return {"name": name, "deleted": True}


@router.get("/{name}/documents", summary="The documents of a knowledge base (rag kb docs)")
async def list_documents(name: str, request: Request):
    from rag import kb

    kbs = _registry(request)
    _existing(kbs, name)
    return {"object": "list", "data": [{"doc_id": d.doc_id, "source": Path(d.source).name if d.source else "",
                                        "title": d.title, "chunks": d.chunks} for d in kb.documents(name, kbs.root)]}


@router.post("/{name}/documents", summary="Upload files into a knowledge base (rag kb add)")
async def add_documents(name: str, files: list[UploadFile], request: Request):
    from rag import kb
    from rag.corpus import SUPPORTED_SUFFIXES

    kbs = _registry(request)
    _existing(kbs, name)
    if not files:
        raise ApiError(400, "send one or more files in the multipart field `files`", "no_files")
    names = []
    for f in files:
        base = Path((f.filename or "").replace("\\", "/")).name
        if not base or base.startswith("."):
            raise ApiError(400, f"bad file name {f.filename!r}; give each upload a plain file name", "invalid_file")
        if Path(base).suffix.lower() not in SUPPORTED_SUFFIXES:
            raise ApiError(400, f"{base}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}",
                           "unsupported_file")
        names.append(base)
    folder = _uploads(kbs, name)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f, base in zip(files, names):
        path = folder / base
        path.write_bytes(await f.read())
        paths.append(path)
    try:
        changes = await run_in_threadpool(kb.add, name, paths, kbs.config, lambda: kbs.embedder, kbs.root)
    except RagError as e:
        raise ApiError(400, str(e), "kb_error") from e
    finally:
        await run_in_threadpool(kbs.changed, name)
    return {"name": name, "files": [dict(dataclasses.asdict(c), path=Path(c.path).name) for c in changes]}


@router.delete("/{name}/documents/{doc_id}", summary="Remove a document from a knowledge base (rag kb remove)")
async def remove_document(name: str, doc_id: str, request: Request):
    from rag import kb

    kbs = _registry(request)
    _existing(kbs, name)
    if doc_id not in {d.doc_id for d in kb.documents(name, kbs.root)}:
        raise ApiError(404, f"no document {doc_id!r} in knowledge base {name!r}; see GET /v1/kbs/{name}/documents",
                       "document_not_found")
    try:
        gone = await run_in_threadpool(kb.remove, name, [doc_id], kbs.root)
    except RagError as e:
        raise ApiError(400, str(e), "kb_error") from e
    finally:
        await run_in_threadpool(kbs.changed, name)
    _drop_orphan_uploads(kbs, name)
    return {"name": name, "removed": gone}


def _drop_orphan_uploads(kbs, name: str) -> None:
    """Delete uploaded files the KB no longer holds a document of."""
    from rag import kb

    folder = _uploads(kbs, name)
    if not folder.is_dir():
        return
    used = {str(Path(d.source).resolve()) for d in kb.documents(name, kbs.root) if d.source}
    for path in folder.iterdir():
        if path.is_file() and str(path.resolve()) not in used:
            path.unlink(missing_ok=True)
