"""``create_app(rag)``: the FastAPI app serving the HTTP API under ``/v1``.

Example:
    >>> from rag.pipeline import RAG
    >>> app = create_app(RAG.load("index/default"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=7860)  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Sequence

from fastapi import FastAPI

from rag.api import kb_routes, openai, rest
from rag.api.deps import ApiState, install_error_handlers
from rag.api.keys import KeyStore
from rag.api.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_UPLOAD_BYTES, BodyLimit, RateLimiter
from rag.api.mcp_http import add_mcp_route, mcp_lifespan
from rag.api.queue import AnswerGate
from rag.api.registry import KBRegistry

logger = logging.getLogger(__name__)

DEFAULT_KB = "default"


def create_app(
    rag,
    *,
    keys: KeyStore | None = None,
    concurrency: int = 1,
    max_queue: int = 16,
    rate_limit: float = 0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    cors_origins: Sequence[str] = (),
    kb_name: str = DEFAULT_KB,
    host: str = "127.0.0.1",
    mcp: bool = True,
    index_root: str | Path | None = None,
    served_kbs: Sequence[str] | None = None,
) -> FastAPI:
    """The API app over a loaded `RAG` (the knowledge base ``kb_name``) and the KBs under ``index_root``.

    Args:
        rag: the loaded pipeline, served as ``kb_name``; the other KBs share its embedder and generators.
        index_root: also serve every KB under this folder (loaded on first use) and the ``/v1/kbs`` routes.
        served_kbs: the KBs ``rag`` was loaded from, so a change to one through the API reloads it.
        keys: accepted API keys (default: the data folder's store and ``$WENYUAN_API_KEYS``);
            with no key at all, ``/v1`` is open (serve on loopback only: see `check_exposure`).
        concurrency, max_queue: answers generating at once, and waiting; more get 429.
        rate_limit: requests per minute per key (per address when open); 0 for none.
        max_body_bytes: larger request bodies get 413 (``max_upload_bytes`` for document uploads).
        cors_origins: origins allowed to call the API from a browser (none by default).
        host: the address served (the MCP endpoint checks ``Host`` headers on loopback).
        mcp: also serve the knowledge base over MCP streamable HTTP at ``/mcp`` (`rag.api.mcp_http`).
    """
    registry = KBRegistry(rag, kb_name, root=index_root, served_kbs=served_kbs)
    state = ApiState(kbs=registry, keys=keys or KeyStore(), gate=AnswerGate(concurrency, max_queue),
                     limiter=RateLimiter(rate_limit), created=int(time.time()))
    servers: list = []

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.gate.bind(asyncio.get_running_loop())  # so the chat UI's threads can share the answer queue
        async with mcp_lifespan(servers[0] if servers else None):
            yield

    app = FastAPI(title="问源 Wenyuan API", version="1", docs_url="/docs", redoc_url=None, lifespan=lifespan,
                  description="Cited answers from your documents. `/v1/chat/completions` speaks the OpenAI format; "
                              "`model` names the knowledge base. MCP (streamable HTTP) at `/mcp`.")
    app.state.api = state
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(rest.router)
    app.include_router(kb_routes.router)
    app.include_router(rest.health)
    if mcp and (server := add_mcp_route(app, rag, kb_name=kb_name, gate=state.gate, host=host,
                                        resolve=registry.get)) is not None:
        servers.append(server)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, upload_bytes=max_upload_bytes)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    return app
