"""What every route shares: the server state, key checks, JSON errors, record serialisers."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.api.keys import KeyStore
from rag.api.limits import RateLimiter, retry_header
from rag.api.queue import AnswerGate, Busy
from rag.errors import IndexLoadError, ModelError, QuestionError, RagError
from rag.records import Answer, Passage

logger = logging.getLogger(__name__)

# Chat requests: how much history one request may carry.
MAX_MESSAGES = 64
MAX_MESSAGE_CHARS = 8000


@dataclass
class ApiState:
    """The loaded knowledge bases and the server's limits (``app.state.api``)."""

    kbs: Any  # a rag.api.registry.KBRegistry: name -> RAG, loaded on first use
    keys: KeyStore
    gate: AnswerGate
    limiter: RateLimiter
    created: int = 0
    extra: dict = field(default_factory=dict)

    def kb(self, name: str | None):
        """The RAG for KB ``name`` (None: the one the server was started with); 404 naming the ones there are."""
        return self.kbs.get(self.kbs.served_name if name is None else name)


class ApiError(Exception):
    """An error with an HTTP status and a message saying what to fix."""

    def __init__(self, status: int, message: str, code: str = "invalid_request_error", headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def state_of(request: Request) -> ApiState:
    return request.app.state.api


async def authorize(request: Request) -> str:
    """Check the ``Authorization: Bearer`` key (when any key exists) and the rate limit; returns the client name."""
    client = check_key(request)
    wait = state_of(request).limiter.take(client)
    if wait:
        raise ApiError(429, f"rate limit reached for this key; retry in {wait:.1f} s", "rate_limit_exceeded",
                       retry_header(wait))
    return client


def check_key(request: Request) -> str:
    """The client name (``key:<id>``, or ``ip:<address>`` while no key exists); `ApiError` 401 for a bad key."""
    state = state_of(request)
    if state.keys.has_keys():
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing API key: send the header `Authorization: Bearer <key>` "
                                "(the server's owner creates keys with `rag keys create`)", "invalid_api_key")
        key_id = state.keys.check(token.strip())
        if key_id is None:
            raise ApiError(401, "invalid API key: it is unknown or was revoked; ask for a key made with `rag keys create`",
                           "invalid_api_key")
        client = f"key:{key_id}"
    else:
        client = f"ip:{request.client.host if request.client else '?'}"
    return client


def error_response(status: int, message: str, code: str, headers: dict | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error becomes ``{"error": {"message", "type", "code"}}`` (the OpenAI shape)."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, e: ApiError):
        return error_response(e.status, e.message, e.code, e.headers)

    @app.exception_handler(Busy)
    async def _busy(request: Request, e: Busy):
        return error_response(429, str(e), "server_busy", {"Retry-After": str(e.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'] if p != 'body') or 'body'}: {err['msg']}"
                             for err in e.errors()[:5])
        return error_response(400, f"invalid request: {problems}", "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        message = {404: f"no route {request.url.path}; see /docs for the API",
                   405: f"{request.method} is not allowed on {request.url.path}; see /docs"}.get(e.status_code, str(e.detail))
        return error_response(e.status_code, message, "http_error", getattr(e, "headers", None))

    @app.exception_handler(RagError)
    async def _rag(request: Request, e: RagError):
        status = rag_status(e)
        if status >= 500:
            logger.error("%s on %s: %s", type(e).__name__, request.url.path, e)
        return error_response(status, str(e), type(e).__name__)


def rag_status(e: RagError) -> int:
    """HTTP status for a library error: the caller's mistake (400) or the server's state (503/500)."""
    if isinstance(e, QuestionError):
        return 400
    if isinstance(e, (IndexLoadError, ModelError)):
        return 503
    return 500


def passage_json(p: Passage, rank: int) -> dict:
    return {"rank": rank, "doc_id": p.doc_id, "chunk_id": p.chunk_id, "title": p.title, "text": p.text,
            "start": p.chunk.start, "end": p.chunk.end, "score": p.score, "dense_score": p.dense_score,
            "lexical_score": p.lexical_score, "location": p.location}


def citations_json(answer: Answer) -> list[dict]:
    """``[n]`` markers of the answer text with their sources; ``passage.text[start:end] == quote``."""
    out = []
    for c in answer.citations:
        title = answer.passages[c.marker - 1].title if 0 < c.marker <= len(answer.passages) else ""
        out.append({"marker": c.marker, "doc_id": c.doc_id, "chunk_id": c.chunk_id, "title": title, "quote": c.quote,
                    "start": c.start, "end": c.end, "location": c.location})
    return out
