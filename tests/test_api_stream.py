"""Backpressure and cancellation: a full answer queue is 429, a client that leaves stops its generation."""
from __future__ import annotations

import json
import threading
import time

import httpx

from conftest import install_generator
from test_api_server import QUESTION, SlowGenerator, open_keys, running  # noqa: F401 - fixture

CHAT = {"model": "default", "messages": [{"role": "user", "content": QUESTION}], "stream": True}


def test_client_disconnect_stops_generation_within_a_second(mini_rag, open_keys) -> None:
    from rag.api.app import create_app

    gen = SlowGenerator("腾讯基金会计划出资3亿元。" * 20, delay=0.05)  # about 13 s if left to run
    install_generator(mini_rag, gen)
    app = create_app(mini_rag, keys=open_keys)
    with running(app) as url:
        drafts = 0
        with httpx.stream("POST", url + "/v1/chat/completions", json=CHAT, timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if '"draft"' in line:
                    drafts += 1
                if drafts == 5:
                    break
            left = time.monotonic()
        deadline = time.monotonic() + 5
        while not gen.closed_at and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gen.closed_at, "the generator's stream was never closed"
        assert gen.finished == 0
        assert gen.closed_at[0] - left < 1.0, f"stopped {gen.closed_at[0] - left:.2f} s after the client left"
        # The slot is free again: the next answer is served, not queued behind a ghost.
        deadline = time.monotonic() + 5
        while app.state.api.gate.admitted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.state.api.gate.admitted == 0


def test_full_queue_is_429_with_retry_after_never_5xx(mini_rag, open_keys) -> None:
    from rag.api.app import create_app

    gen = SlowGenerator("腾讯基金会计划出资3亿元[1]。", delay=0.05)  # about 0.8 s per answer
    install_generator(mini_rag, gen)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def ask(url: str, path: str, body: dict) -> None:
        r = httpx.post(url + path, json=body, timeout=60)
        with lock:
            results.append(r)

    with running(create_app(mini_rag, keys=open_keys, concurrency=1, max_queue=1)) as url:
        bodies = [("/v1/ask", {"question": QUESTION})] * 3 + [("/v1/chat/completions", {**CHAT, "stream": False})] * 2
        threads = [threading.Thread(target=ask, args=(url, path, body)) for path, body in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    statuses = sorted(r.status_code for r in results)
    assert len(results) == 5 and all(s in (200, 429) for s in statuses), statuses
    assert statuses.count(200) == 2 and statuses.count(429) == 3, statuses  # one generating + one waiting
    for r in results:
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert "busy" in r.json()["error"]["message"] and r.json()["error"]["code"] == "server_busy"
    assert len(gen.questions) == 2


def test_search_does_not_wait_behind_generation(mini_rag, open_keys) -> None:
    from rag.api.app import create_app

    gen = SlowGenerator("腾讯基金会计划出资3亿元[1]。" * 10, delay=0.05)  # about 8 s
    install_generator(mini_rag, gen)
    with running(create_app(mini_rag, keys=open_keys)) as url:
        with httpx.stream("POST", url + "/v1/chat/completions", json=CHAT, timeout=30) as stream:
            lines = stream.iter_lines()
            assert '"role": "assistant"' in next(lines)  # generation is under way
            started = time.monotonic()
            r = httpx.post(url + "/v1/search", json={"question": QUESTION}, timeout=10)
            took = time.monotonic() - started
            health = httpx.get(url + "/healthz", timeout=10).json()
        assert r.status_code == 200 and r.json()["passages"][0]["doc_id"] == "doc-001"
        assert took < 1.0, f"search took {took:.2f} s while an answer was generating"
        assert health["answers"]["generating"] == 1 and not gen.finished


def test_error_during_streaming_is_an_error_event_then_done(mini_rag, open_keys) -> None:
    from rag.api.app import create_app
    from rag.errors import ModelError

    class Broken:
        backend = "scripted"

        def stream(self, question, passages):
            yield "腾讯"
            raise ModelError("the model file is damaged; run `rag models provision`")

    install_generator(mini_rag, Broken())
    with running(create_app(mini_rag, keys=open_keys)) as url:
        with httpx.stream("POST", url + "/v1/chat/completions", json=CHAT, timeout=30) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert r.status_code == 200
        assert events[-1] == "[DONE]"
        assert "rag models provision" in json.loads(events[-2])["error"]["message"]
        r = httpx.post(url + "/v1/ask", json={"question": QUESTION}, timeout=30)
        assert r.status_code == 503 and "rag models provision" in r.json()["error"]["message"]
