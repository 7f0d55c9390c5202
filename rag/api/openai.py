"""OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``GET /v1/models``.

``model`` names the knowledge base. Earlier ``messages`` feed the follow-up
rewrite. Parameters this server has no use for (temperature, max_tokens, top_p,
n, stop, user, ...) are accepted and ignored.

Streaming (``stream: true``): the first chunk carries the role; while the
model generates, each raw piece goes out in a non-standard ``delta.draft``
field (standard clients ignore it); once the answer check has run, the
verified text (with its ``[n]`` markers, or the refusal sentence) is sent as
``delta.content``, and the last chunk carries ``finish_reason``, ``citations``
and ``refused``. So a plain client shows only what was verified, which may
differ from the raw draft (claims dropped, an extractive rescue, a refusal).
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from rag.api.deps import MAX_MESSAGE_CHARS, MAX_MESSAGES, ApiError, authorize, citations_json, rag_status, state_of
from rag.api.runner import AnswerRun
from rag.errors import RagError
from rag.questions import clean_question
from rag.records import Answer

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", dependencies=[Depends(authorize)], tags=["OpenAI-compatible"])


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = Field(False, description="Send the token counts in a last chunk with no choices.")


class ChatRequest(BaseModel):
    """OpenAI Chat Completions request; unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The knowledge base to answer from (GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    top_k: int | None = Field(None, ge=1, le=50, description="Passages to retrieve (extension; default: the config).")
    stream_options: StreamOptions | None = None


def message_text(message: ChatMessage) -> str:
    """Text of a message: a string, or the text parts of a content list."""
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text")


def split_messages(messages: list[ChatMessage]) -> tuple[str, list[dict]]:
    """The question (last user message) and the earlier user/assistant turns as history."""
    if len(messages) > MAX_MESSAGES:
        raise ApiError(400, f"too many messages ({len(messages)}); send at most {MAX_MESSAGES} (drop the oldest turns)",
                       "too_many_messages")
    for i, m in enumerate(messages):
        if len(message_text(m)) > MAX_MESSAGE_CHARS:
            raise ApiError(400, f"messages[{i}] has over {MAX_MESSAGE_CHARS} characters; shorten it", "message_too_long")
    if messages[-1].role != "user":
        raise ApiError(400, f"the last message must have role 'user' (the question), not {messages[-1].role!r}",
                       "invalid_messages")
    history = [{"role": m.role, "content": message_text(m)} for m in messages[:-1] if m.role in ("user", "assistant")]
    return message_text(messages[-1]), history


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_json(answer: Answer, model: str, cid: str) -> dict:
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": "stop"}],
        "usage": usage_json(answer),
        **answer_extras(answer),
    }


def usage_json(answer: Answer) -> dict:
    """OpenAI's token counts: the generator's, or zeros where no model ran (a refusal before generation)."""
    prompt, completion = answer.usage.get("prompt_tokens", 0), answer.usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def answer_extras(answer: Answer) -> dict:
    """Wenyuan's fields beside the OpenAI ones."""
    return {"citations": citations_json(answer), "refused": answer.refused, "refusal_reason": answer.refusal_reason,
            "standalone_question": answer.standalone_question}


class AnswerStream(StreamingResponse):
    """A streaming response that stops its generation however the response ends (disconnect included)."""

    def __init__(self, run: AnswerRun, content: AsyncIterator[str], **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.run = run

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.run.stop()


def _chunk(cid: str, model: str, delta: dict | None, finish: str | None = None, **extra) -> str:
    """One SSE event; ``delta`` None gives the usage chunk, whose ``choices`` is empty."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": choices, **extra}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _sse(first: str | Answer, events: AsyncIterator[str | Answer], model: str, cid: str,
               include_usage: bool = False) -> AsyncIterator[str]:
    # As OpenAI: with stream_options.include_usage every chunk has "usage": null, and one
    # more chunk with no choices carries the counts before [DONE].
    usage = {"usage": None} if include_usage else {}
    yield _chunk(cid, model, {"role": "assistant", "content": ""}, **usage)
    item = first
    try:
        while True:
            if isinstance(item, Answer):
                yield _chunk(cid, model, {"content": item.text}, **usage)
                yield _chunk(cid, model, {}, "stop", **answer_extras(item), **usage)
                if include_usage:
                    yield _chunk(cid, model, None, usage=usage_json(item))
                break
            yield _chunk(cid, model, {"draft": item}, **usage)
            item = await events.__anext__()
    except RagError as e:  # after the headers: the error goes in the stream, as OpenAI does
        error = {"message": str(e), "type": "server_error" if rag_status(e) >= 500 else "invalid_request_error",
                 "code": type(e).__name__}
        yield f"data: {json.dumps({'error': error}, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


@router.post("/chat/completions", summary="Answer the last user message from a knowledge base, with citations")
async def chat_completions(body: ChatRequest, request: Request):
    state = state_of(request)
    rag = await run_in_threadpool(state.kb, body.model)  # a KB's first use loads its index
    question, history = split_messages(body.messages)
    clean_question(question, rag.config.generation.max_question_chars)  # 400 now, not mid-stream
    run = AnswerRun(rag, state.gate, question, history, body.top_k)
    cid = _completion_id()
    if not body.stream:
        return JSONResponse(completion_json(await run.answer(), body.model, cid))
    events = run.events()
    try:
        first = await events.__anext__()  # waits for a slot (or 429) and the first piece, before any header
    except BaseException:
        run.stop()
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return AnswerStream(run, _sse(first, events, body.model, cid, include_usage), media_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _model_json(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "wenyuan"}


@router.get("/models", summary="The knowledge bases, as OpenAI models")
async def list_models(request: Request):
    state = state_of(request)
    return {"object": "list", "data": [_model_json(name, state.created) for name in state.kbs.names()]}


@router.get("/models/{name}", summary="One knowledge base, as an OpenAI model")
async def get_model(name: str, request: Request):
    state = state_of(request)
    state.kbs.require(name)
    return _model_json(name, state.created)
