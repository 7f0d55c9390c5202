"""REST routes mirroring the Python API: ``POST /v1/search``, ``POST /v1/ask``, ``GET /healthz``."""
from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from rag.api.deps import MAX_MESSAGE_CHARS, MAX_MESSAGES, ApiError, authorize, citations_json, passage_json, state_of
from rag.api.runner import AnswerRun
from rag.questions import clean_question

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", dependencies=[Depends(authorize)], tags=["REST"])
health = APIRouter(tags=["REST"])


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: str
    top_k: int = Field(5, ge=1, le=50)
    kb: str | None = Field(None, description="Knowledge base (GET /v1/models; default: the one the server was started with).")


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: str
    history: list[Any] = Field(default_factory=list, description="Earlier [question, answer] pairs or {role, content} messages.")
    top_k: int | None = Field(None, ge=1, le=50)
    backend: Literal["causal", "seq2seq", "extractive"] | None = None
    kb: str | None = Field(None, description="Knowledge base (GET /v1/models; default: the one the server was started with).")


def _history(items: list[Any]) -> list:
    if len(items) > MAX_MESSAGES:
        raise ApiError(400, f"history has {len(items)} turns; send at most {MAX_MESSAGES}", "too_many_messages")
    out: list = []
    for i, turn in enumerate(items):
        if isinstance(turn, dict) and isinstance(turn.get("content"), str):
            out.append({"role": str(turn.get("role", "")), "content": turn["content"]})
        elif isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn):
            out.append((turn[0], turn[1]))
        else:
            raise ApiError(400, f"history[{i}] must be a [question, answer] pair of strings or a {{role, content}} message",
                           "invalid_history")
        if sum(len(t) for t in (out[-1].values() if isinstance(out[-1], dict) else out[-1])) > MAX_MESSAGE_CHARS:
            raise ApiError(400, f"history[{i}] has over {MAX_MESSAGE_CHARS} characters; shorten it", "message_too_long")
    return out


@router.post("/search", summary="Top-k passages for a question (RAG.retrieve)")
async def search(body: SearchRequest, request: Request):
    rag = await run_in_threadpool(state_of(request).kb, body.kb)  # a KB's first use loads its index
    question = clean_question(body.question, rag.config.generation.max_question_chars)
    # A thread of its own, not the answer queue: searches never wait behind generation.
    passages = await run_in_threadpool(rag.retrieve, question, body.top_k)
    return {"question": question, "passages": [passage_json(p, i) for i, p in enumerate(passages, 1)]}


@router.post("/ask", summary="A verified, cited answer or a refusal (RAG.ask)")
async def ask(body: AskRequest, request: Request):
    state = state_of(request)
    rag = await run_in_threadpool(state.kb, body.kb)
    clean_question(body.question, rag.config.generation.max_question_chars)
    answer = await AnswerRun(rag, state.gate, body.question, _history(body.history), body.top_k, body.backend).answer()
    return {
        "question": answer.question, "standalone_question": answer.standalone_question, "answer": answer.text,
        "refused": answer.refused, "refusal_reason": answer.refusal_reason, "score": answer.score,
        "citations": citations_json(answer), "passages": [passage_json(p, i) for i, p in enumerate(answer.passages, 1)],
        "backend": answer.backend, "notice": answer.notice, "timings": answer.timings,
        "usage": dict(answer.usage),
    }


@health.get("/healthz", summary="Liveness, the knowledge bases and the answer queue (no key needed)")
async def healthz(request: Request):
    state = state_of(request)
    gate = state.gate
    running = min(gate.admitted, gate.concurrency)
    return {"status": "ok", "knowledge_bases": state.kbs.names(),
            "answers": {"generating": running, "waiting": gate.admitted - running, "max_queue": gate.max_queue}}
