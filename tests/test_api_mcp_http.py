"""MCP over streamable HTTP at /mcp (the SDK's client against a real server), and one answer queue for UI and API."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from conftest import ScriptedGenerator, install_generator
from test_api_server import QUESTION, open_keys, running  # noqa: F401 - fixture

pytest.importorskip("mcp")
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def _json(result) -> dict:
    assert not result.is_error, result.content
    return result.structured_content or json.loads(result.content[0].text)


async def _session(url: str, headers: dict | None = None) -> dict:
    out: dict = {}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
                out["search"] = _json(await session.call_tool("search", {"question": QUESTION, "top_k": 2}))
                out["ask"] = _json(await session.call_tool("ask", {"question": QUESTION}))
                out["empty"] = await session.call_tool("ask", {"question": "  "})
    return out


def test_mcp_over_http_lists_tools_searches_and_asks(mini_rag, open_keys) -> None:
    from rag.api.app import create_app

    install_generator(mini_rag, ScriptedGenerator("腾讯基金会计划出资3亿元[1]。"))
    with running(create_app(mini_rag, keys=open_keys)) as url:
        out = asyncio.run(asyncio.wait_for(_session(url), timeout=60))
        assert httpx.get(url + "/healthz", timeout=10).json()["answers"] == {"generating": 0, "waiting": 0,
                                                                             "max_queue": 16}
    assert out["tools"] == ["ask", "search"]
    passages = out["search"]["passages"]
    assert len(passages) == 2 and passages[0]["doc_id"] == "doc-001"
    assert "3亿元" in out["ask"]["answer"] and out["ask"]["refused"] is False
    assert out["ask"]["citations"][0]["doc_id"] == "doc-001"
    assert out["empty"].is_error and "empty" in out["empty"].content[0].text


def test_mcp_over_http_needs_the_api_key(mini_rag, tmp_path) -> None:
    from rag.api.app import create_app
    from rag.api.keys import KeyStore

    keys = KeyStore(tmp_path / "data", env_keys="")
    key, _ = keys.create("agent")
    install_generator(mini_rag, ScriptedGenerator("腾讯基金会计划出资3亿元[1]。"))
    with running(create_app(mini_rag, keys=keys)) as url:
        missing = httpx.post(url + "/mcp", json=INIT, headers=MCP_HEADERS, timeout=10)
        assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]["message"]
        wrong = httpx.post(url + "/mcp", json=INIT, headers={**MCP_HEADERS, "authorization": "Bearer wy-nope"}, timeout=10)
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url + "/mcp", headers={"accept": "text/event-stream"}, timeout=10).status_code == 401
        out = asyncio.run(asyncio.wait_for(_session(url, {"Authorization": f"Bearer {key}"}), timeout=60))
    assert out["tools"] == ["ask", "search"] and "3亿元" in out["ask"]["answer"]


class RecordingGenerator:
    """Streams ``reply`` slowly; records the (start, end) monotonic interval of every generation."""

    backend = "scripted"

    def __init__(self, reply: str, delay: float) -> None:
        self.reply, self.delay = reply, delay
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def stream(self, question, passages):
        start = time.monotonic()
        try:
            for ch in self.reply:
                time.sleep(self.delay)
                yield ch
        finally:
            with self._lock:
                self.intervals.append((start, time.monotonic()))


def test_ui_api_and_mcp_answers_share_one_queue(mini_rag, open_keys, tmp_path) -> None:
    """With concurrency 1, an answer of the chat UI, of /v1/ask and of MCP never generate at the same time."""
    pytest.importorskip("gradio")
    from gradio_client import Client

    from ui.server import build_server

    gen = RecordingGenerator("腾讯基金会计划出资3亿元[1]。", delay=0.06)  # about 1 s per answer
    install_generator(mini_rag, gen)
    app = build_server(mini_rag, data_dir=tmp_path / "user", keys=open_keys, concurrency=1)
    with running(app) as url:
        client = Client(url + "/", verbose=False)
        results: dict = {}

        def ui(i: int) -> None:
            results[f"ui{i}"] = client.predict(QUESTION, 5, mini_rag.config.generation.backend, api_name="/ask")

        def api(i: int) -> None:
            results[f"api{i}"] = httpx.post(url + "/v1/ask", json={"question": QUESTION}, timeout=60).json()

        def mcp() -> None:
            results["mcp"] = asyncio.run(asyncio.wait_for(_session(url), timeout=60))["ask"]

        threads = [threading.Thread(target=f, args=a) for f, a in
                   [(ui, (0,)), (api, (0,)), (api, (1,)), (ui, (1,)), (mcp, ())]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert httpx.get(url + "/healthz", timeout=10).json()["answers"]["generating"] == 0
    assert len(results) == 5, results.keys()
    assert all("3亿元" in r["answer"] for r in results.values())
    spans = sorted(gen.intervals)
    assert len(spans) == 5
    overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
    assert not overlaps, f"answers generated at the same time: {overlaps}"


def test_gated_stream_waits_for_the_slot_and_frees_it_when_closed(mini_rag) -> None:
    """The UI's streaming path: ``gated(rag).ask_stream`` waits for the API's slot and frees it even when closed early."""
    from rag.api.queue import AnswerGate, gated

    install_generator(mini_rag, RecordingGenerator("腾讯基金会计划出资3亿元[1]。", delay=0.01))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    try:
        gate = AnswerGate(concurrency=1, max_queue=0)
        gate.bind(loop)
        asyncio.run_coroutine_threadsafe(gate.enter(), loop).result(5)  # an API answer holds the only slot
        got: list = []
        ui = threading.Thread(target=lambda: got.append(next(iter(gated(mini_rag, gate).ask_stream(QUESTION)))))
        ui.start()
        time.sleep(0.3)
        assert not got and gate.admitted == 2  # waiting, beyond max_queue: the UI has its own queue
        gate.release()
        ui.join(10)
        assert got and isinstance(got[0], str)
        time.sleep(0.1)  # the dropped stream was closed: its slot is free again
        assert gate.admitted == 0
        asyncio.run_coroutine_threadsafe(gate.enter(), loop).result(5)
        gate.release()
    finally:
        loop.call_soon_threadsafe(loop.stop)
