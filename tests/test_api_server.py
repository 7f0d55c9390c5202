"""The HTTP API on a real uvicorn server; also the helpers the other tests/test_api*.py files use."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

from conftest import ScriptedGenerator, install_generator

QUESTION = "腾讯基金会计划出资多少？"


class SlowGenerator:
    """Streams ``reply`` one character every ``delay`` seconds; records when its stream ended and how."""

    backend = "scripted"

    def __init__(self, reply: str, delay: float) -> None:
        self.reply, self.delay = reply, delay
        self.questions: list[str] = []
        self.closed_at: list[float] = []  # monotonic time each stream ended (finished or closed)
        self.finished = 0

    def stream(self, question, passages):
        self.questions.append(question)
        try:
            for ch in self.reply:
                time.sleep(self.delay)
                yield ch
            self.finished += 1
        finally:
            self.closed_at.append(time.monotonic())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app):
    """Serve ``app`` with uvicorn on a free loopback port in a background thread; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def open_keys(tmp_path):
    """No API key at all: /v1 is open (loopback)."""
    from rag.api.keys import KeyStore

    return KeyStore(tmp_path / "data", env_keys="")


@pytest.fixture
def api(mini_rag, open_keys):
    """(url, rag) of an API server over the mini index with no keys."""
    from rag.api.app import create_app

    with running(create_app(mini_rag, keys=open_keys)) as url:
        yield url, mini_rag


def test_ui_and_api_share_one_port(mini_rag, open_keys, tmp_path) -> None:
    pytest.importorskip("gradio")
    from ui.server import build_server

    install_generator(mini_rag, ScriptedGenerator("腾讯基金会计划出资3亿元[1]。", "腾讯基金会计划出资3亿元[1]。"))
    app = build_server(mini_rag, data_dir=tmp_path / "user", keys=open_keys)
    with running(app) as url:
        page = httpx.get(url + "/", timeout=30)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        models = httpx.get(url + "/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["default"]
        # One knowledge base: nothing to choose, so the UI shows no chooser.
        config = httpx.get(url + "/config", timeout=30).json()
        [chooser] = [c["props"] for c in config["components"] if c.get("props", {}).get("elem_id") == "wy-kbs"]
        assert chooser["visible"] is False
        assert httpx.get(url + "/healthz", timeout=10).json()["status"] == "ok"
        docs = httpx.get(url + "/docs", timeout=10)
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        answer = httpx.post(url + "/v1/ask", json={"question": QUESTION}, timeout=30).json()
        assert "3亿元" in answer["answer"] and answer["citations"][0]["doc_id"] == "doc-001"
        # The UI's own Gradio API still answers, on the same loaded pipeline, without a key.
        from gradio_client import Client

        result = Client(url + "/", verbose=False).predict(QUESTION, 5, mini_rag.config.generation.backend, api_name="/ask")
        assert result["refused"] is False and "3亿元" in result["answer"]


def test_openapi_lists_every_route(api) -> None:
    url, _ = api
    paths = set(httpx.get(url + "/openapi.json", timeout=10).json()["paths"])
    assert {"/v1/chat/completions", "/v1/models", "/v1/search", "/v1/ask", "/healthz"} <= paths
