"""OpenAI-compatible chat and the REST routes, through the official `openai` client and httpx."""
from __future__ import annotations

import httpx
import pytest

from conftest import ScriptedGenerator, install_generator
from test_api_server import QUESTION, api, open_keys, running  # noqa: F401 - fixtures

openai = pytest.importorskip("openai")
from rag.generation import REFUSAL  # noqa: E402

IGNORED = dict(temperature=0.2, max_tokens=50, top_p=0.9, n=1, stop=["\n"], user="tester", presence_penalty=0.1)


def client(url: str, key: str = "none") -> "openai.OpenAI":
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_chat_completion_answers_with_verified_citations(api) -> None:
    url, rag = api
    gen = ScriptedGenerator("腾讯基金会计划出资3亿元[1]。")
    install_generator(rag, gen)
    resp = client(url).chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}], **IGNORED)
    text = resp.choices[0].message.content
    assert "3亿元" in text and resp.choices[0].finish_reason == "stop" and resp.model == "default"
    assert resp.refused is False and gen.questions == [QUESTION]
    c = resp.citations[0]
    assert f"[{c['marker']}]" in text and c["doc_id"] == "doc-001" and "3亿元" in c["quote"]
    assert set(c) == {"marker", "doc_id", "chunk_id", "title", "quote", "start", "end", "location"}
    assert c["location"] == {}  # a plain-text corpus has no page or section
    passages = httpx.post(url + "/v1/search", json={"question": QUESTION, "top_k": 5}, timeout=10).json()["passages"]
    source = next(p for p in passages if p["chunk_id"] == c["chunk_id"])
    assert source["text"][c["start"]:c["end"]] == c["quote"]


def test_streaming_sends_drafts_then_the_verified_text_and_citations(api) -> None:
    url, rag = api
    raw = "腾讯基金会计划出资3亿元[1]。"
    install_generator(rag, ScriptedGenerator(raw, raw))
    expected = client(url).chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}])
    chunks = list(client(url).chat.completions.create(
        model="default", messages=[{"role": "user", "content": QUESTION}], stream=True, **IGNORED))
    assert chunks[0].choices[0].delta.role == "assistant"
    drafts = "".join(getattr(ch.choices[0].delta, "draft", None) or "" for ch in chunks)
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert drafts == raw  # the generator's pieces, two characters each
    assert content == expected.choices[0].message.content and "3亿元" in content
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and last.refused is False
    assert last.citations == expected.citations and last.citations[0]["doc_id"] == "doc-001"
    assert all(ch.id == chunks[0].id for ch in chunks)


class CountingGenerator(ScriptedGenerator):
    """Reports usage as an engine does: the question's characters as prompt tokens, one token per piece."""

    reports_usage = True

    def stream(self, question, passages, usage=None):
        usage.update(prompt_tokens=len(question), completion_tokens=0)
        for piece in super().stream(question, passages):
            usage["completion_tokens"] += 1
            yield piece


def test_usage_carries_the_generators_token_counts(api) -> None:
    url, rag = api
    raw = "腾讯基金会计划出资3亿元[1]。"  # 15 characters: 8 pieces of two
    install_generator(rag, CountingGenerator(raw, raw, raw, raw))
    messages = [{"role": "user", "content": QUESTION}]
    expected = {"prompt_tokens": len(QUESTION), "completion_tokens": 8, "total_tokens": len(QUESTION) + 8}
    resp = client(url).chat.completions.create(model="default", messages=messages)
    assert resp.usage.model_dump(include=set(expected)) == expected

    # Streamed: OpenAI's stream_options.include_usage adds one last chunk with no choices.
    chunks = list(client(url).chat.completions.create(model="default", messages=messages, stream=True,
                                                      stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump(include=set(expected)) == expected
    assert all(ch.usage is None for ch in chunks[:-1]) and chunks[-2].choices[0].finish_reason == "stop"
    plain = list(client(url).chat.completions.create(model="default", messages=messages, stream=True))
    assert plain[-1].choices[0].finish_reason == "stop" and all(ch.usage is None for ch in plain)

    body = httpx.post(url + "/v1/ask", json={"question": QUESTION}, timeout=30).json()
    assert body["usage"] == {"prompt_tokens": len(QUESTION), "completion_tokens": 8}

    # Refused before any generation: no model ran, so nothing was counted.
    off = client(url).chat.completions.create(model="default", messages=[{"role": "user", "content": "火星的首都在哪里？"}])
    assert off.refused is True
    assert off.usage.model_dump(include=set(expected)) == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_stream_ends_with_done_on_the_wire(api) -> None:
    url, rag = api
    install_generator(rag, ScriptedGenerator("腾讯基金会计划出资3亿元[1]。"))
    body = {"model": "default", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_follow_up_history_feeds_the_rewrite(api) -> None:
    url, rag = api
    gen = ScriptedGenerator("倪子君介绍了“京鄂iWill志愿者联合行动”[1]。")
    install_generator(rag, gen)
    messages = [
        {"role": "system", "content": "你是助手。"},
        {"role": "user", "content": "北京幸福公益基金会的理事长是谁？"},
        {"role": "assistant", "content": "倪子君[1]。"},
        {"role": "user", "content": [{"type": "text", "text": "她介绍了什么？"}]},
    ]
    resp = client(url).chat.completions.create(model="default", messages=messages)
    assert gen.questions == ["北京幸福公益基金会介绍了什么？"]
    assert resp.standalone_question == "北京幸福公益基金会介绍了什么？" and resp.refused is False


def test_refusal_is_a_normal_answer_marked_refused(api) -> None:
    url, rag = api
    # An invented answer to a question the documents do not answer.
    install_generator(rag, ScriptedGenerator("腾讯基金会的秘书长是张三。"))
    resp = client(url).chat.completions.create(model="default", messages=[{"role": "user", "content": "腾讯基金会的秘书长是谁？"}])
    assert resp.refused is True and resp.choices[0].message.content == REFUSAL and resp.citations == []


def test_unknown_kb_is_404_with_a_message(api) -> None:
    url, _ = api
    with pytest.raises(openai.NotFoundError) as e:
        client(url).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    assert e.value.status_code == 404 and "unknown model" in e.value.message and "default" in e.value.message
    assert httpx.get(url + "/v1/models/gpt-4o", timeout=10).status_code == 404
    assert [m.id for m in client(url).models.list()] == ["default"]


def test_keys_are_checked_on_v1_but_not_on_healthz(mini_rag, tmp_path) -> None:
    from rag.api.app import create_app
    from rag.api.keys import KeyStore

    store = KeyStore(tmp_path / "data", env_keys="env-secret")
    key, record = store.create("tests")
    install_generator(mini_rag, ScriptedGenerator("腾讯基金会计划出资3亿元[1]。"))
    with running(create_app(mini_rag, keys=store)) as url:
        with pytest.raises(openai.AuthenticationError) as e:
            client(url, "wy-wrong").chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}])
        assert e.value.status_code == 401 and "invalid API key" in e.value.message
        missing = httpx.post(url + "/v1/search", json={"question": QUESTION}, timeout=10)
        assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]["message"]
        assert "3亿元" in client(url, key).chat.completions.create(
            model="default", messages=[{"role": "user", "content": QUESTION}]).choices[0].message.content
        assert [m.id for m in client(url, "env-secret").models.list()] == ["default"]
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200
        store.revoke(record.id)  # a running server stops accepting it at once
        assert httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 401


# --- REST ---

def test_search_returns_ranked_passages(api) -> None:
    url, rag = api
    r = httpx.post(url + "/v1/search", json={"question": QUESTION, "top_k": 2}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and len(body["passages"]) == 2
    expected = rag.retrieve(QUESTION, top_k=2)
    assert [p["chunk_id"] for p in body["passages"]] == [p.chunk_id for p in expected]
    assert body["passages"][0]["doc_id"] == "doc-001" and body["passages"][0]["rank"] == 1


def test_ask_mirrors_rag_ask_with_history_pairs(api) -> None:
    url, rag = api
    gen = ScriptedGenerator("倪子君介绍了“京鄂iWill志愿者联合行动”[1]。")
    install_generator(rag, gen)
    body = {"question": "她介绍了什么？", "history": [["北京幸福公益基金会的理事长是谁？", "倪子君[1]。"]]}
    r = httpx.post(url + "/v1/ask", json=body, timeout=30).json()
    assert gen.questions == ["北京幸福公益基金会介绍了什么？"] and r["refused"] is False
    assert r["citations"] and r["passages"][r["citations"][0]["marker"] - 1]["doc_id"] == r["citations"][0]["doc_id"]
    assert {"retrieve_ms", "total_ms"} <= set(r["timings"])


@pytest.mark.parametrize("question, fragment", [("", "empty"), ("   ", "empty"), ("问" * 600, "500")])
def test_bad_questions_are_400_with_the_library_message(api, question, fragment) -> None:
    from rag.errors import QuestionError
    from rag.questions import clean_question

    url, _ = api
    with pytest.raises(QuestionError) as expected:
        clean_question(question, 500)
    for path, body in [("/v1/ask", {"question": question}), ("/v1/search", {"question": question}),
                       ("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": question}]})]:
        r = httpx.post(url + path, json=body, timeout=10)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["message"] == str(expected.value) and fragment in str(expected.value)


def test_unknown_openai_parameters_are_ignored(api) -> None:
    url, rag = api
    install_generator(rag, ScriptedGenerator("腾讯基金会计划出资3亿元[1]。"))
    body = {"model": "default", "messages": [{"role": "user", "content": QUESTION, "name": "u1"}], "temperature": "hot",
            "max_tokens": 5, "logit_bias": {"1": 2}, "response_format": {"type": "text"}, "tools": [], "seed": 1,
            "frequency_penalty": 0, "stream_options": {"include_usage": True}, "n": 3, "user": "x", "stop": None}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert "3亿元" in r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("body, status, fragment", [
    ({"model": "default", "messages": []}, 400, "messages"),
    ({"model": "default"}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ({"model": "default", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message must have role 'user'"),
    ({"model": "default", "messages": [{"role": "user", "content": "问"}] * 65}, 400, "too many messages"),
    ({"model": "default", "messages": [{"role": "user", "content": "问" * 9000}, {"role": "user", "content": "hi"}]},
     400, "messages[0] has over 8000 characters"),
])
def test_malformed_chat_requests_say_what_to_fix(api, body, status, fragment) -> None:
    url, _ = api
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == status and fragment in r.json()["error"]["message"], r.text


def test_oversized_body_is_413_and_not_json_is_400(api) -> None:
    url, _ = api
    big = {"model": "default", "messages": [{"role": "user", "content": "问" * 400_000}]}
    r = httpx.post(url + "/v1/chat/completions", json=big, timeout=10)
    assert r.status_code == 413 and "over 1000000 bytes" in r.json()["error"]["message"]

    def chunks():
        for _ in range(20):
            yield b"x" * 100_000

    r = httpx.post(url + "/v1/search", content=chunks(), headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413  # chunked, no content-length: counted as it arrives
    r = httpx.post(url + "/v1/search", content=b"{not json", headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "invalid request" in r.json()["error"]["message"]
    r = httpx.get(url + "/v1/nothing", timeout=10)
    assert r.status_code == 404 and "/docs" in r.json()["error"]["message"]


def test_rate_limit_is_429_with_retry_after(mini_rag, open_keys) -> None:
    from rag.api.app import create_app

    with running(create_app(mini_rag, keys=open_keys, rate_limit=2)) as url:
        statuses = [httpx.post(url + "/v1/search", json={"question": QUESTION}, timeout=10) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert int(statuses[2].headers["Retry-After"]) >= 1 and "rate limit" in statuses[2].json()["error"]["message"]


def test_no_cors_unless_configured(mini_rag, open_keys) -> None:
    from rag.api.app import create_app

    headers = {"Origin": "https://chat.example", "Access-Control-Request-Method": "POST"}
    with running(create_app(mini_rag, keys=open_keys)) as url:
        r = httpx.get(url + "/v1/models", headers={"Origin": "https://chat.example"}, timeout=10)
        assert "access-control-allow-origin" not in r.headers
    with running(create_app(mini_rag, keys=open_keys, cors_origins=["https://chat.example"])) as url:
        r = httpx.options(url + "/v1/chat/completions", headers=headers, timeout=10)
        assert r.headers.get("access-control-allow-origin") == "https://chat.example"
