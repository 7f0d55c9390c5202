"""The API over several knowledge bases: ``model`` picks the KB, and the ``/v1/kbs`` routes mirror ``rag kb``."""
from __future__ import annotations

import httpx
import pytest

from test_api_server import open_keys, running  # noqa: F401  (fixture)

ALPHA = "腾讯基金会计划出资3亿元，用于支持抗疫一线的医护人员。该计划由V基金协助执行。\n"
BETA = "北京幸福公益基金会理事长倪子君分享了志愿者联合行动的经验。\n"
GAMMA = "问源公司的总部位于杭州市西湖区的龙井路八号。\n"


@pytest.fixture
def loads(monkeypatch):
    """Count generator loads (the extractive backend: real answers, no model)."""
    import rag.answering

    real, calls = rag.answering.build_generator, []

    def counting(backend, model=None, **kwargs):
        calls.append(backend)
        return real(backend, model, **kwargs)

    monkeypatch.setattr(rag.answering, "build_generator", counting)
    return calls


def make_two_kbs(tmp_path, fake_config, fake_embedder):
    """(config, root): an index root holding kbA (ALPHA) and kbB (BETA), extractive answers, the fake embedder."""
    from rag import kb

    config = fake_config.with_overrides(generation={"backend": "extractive"})
    root = tmp_path / "index"
    for name, text in (("kbA", ALPHA), ("kbB", BETA)):
        src = tmp_path / "src" / f"{name.lower()}.txt"
        src.parent.mkdir(exist_ok=True)
        src.write_text(text, encoding="utf-8")
        kb.create(name, root, config)
        kb.add(name, [src], config, lambda: fake_embedder, root)
    return config, root


@pytest.fixture
def two_kbs(tmp_path, fake_config, fake_embedder, open_keys, loads):  # noqa: F811
    """(url, root) of a server started with ``--kb kbA`` over an index root holding kbA and kbB (and an empty one)."""
    from rag import kb
    from rag.api.app import create_app
    from rag.pipeline import RAG

    config, root = make_two_kbs(tmp_path, fake_config, fake_embedder)
    kb.create("empty", root, config)
    served = RAG.load_kb("kbA", root, config=config, embedder=fake_embedder)
    app = create_app(served, keys=open_keys, kb_name="kbA", index_root=root, served_kbs=["kbA"])
    with running(app) as url:
        yield url, root


def chat(url: str, model: str, question: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": question}]},
                      timeout=30)


def test_models_list_the_kbs_and_model_picks_one(two_kbs, loads) -> None:
    url, _ = two_kbs
    models = httpx.get(url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["kbA", "kbB"]  # the empty KB cannot answer: not listed
    a = chat(url, "kbA", "腾讯基金会计划出资多少？").json()
    assert "3亿元" in a["choices"][0]["message"]["content"] and a["model"] == "kbA"
    assert a["citations"] and all(c["doc_id"].startswith("kba") for c in a["citations"])
    b = chat(url, "kbB", "倪子君分享了什么经验？").json()
    assert "倪子君" in b["choices"][0]["message"]["content"] and not b["refused"]
    assert b["citations"] and all(c["doc_id"].startswith("kbb") for c in b["citations"])
    assert loads == ["extractive"]  # one generator for both KBs
    search = httpx.post(url + "/v1/search", json={"question": "倪子君", "kb": "kbB"}, timeout=10).json()
    assert search["passages"][0]["doc_id"].startswith("kbb")
    default = httpx.post(url + "/v1/search", json={"question": "腾讯基金会"}, timeout=10).json()  # the served KB
    assert default["passages"][0]["doc_id"].startswith("kba")


def test_unknown_model_is_404_listing_the_kbs(two_kbs) -> None:
    url, _ = two_kbs
    r = chat(url, "nope", "腾讯基金会计划出资多少？")
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert "nope" in message and "kbA" in message and "kbB" in message
    assert httpx.post(url + "/v1/ask", json={"question": "问题", "kb": "empty"}, timeout=10).status_code == 404


def test_kb_routes_create_upload_ask_remove(two_kbs, loads) -> None:
    url, root = two_kbs
    listed = {k["name"]: k for k in httpx.get(url + "/v1/kbs", timeout=10).json()["data"]}
    assert set(listed) == {"kbA", "kbB", "empty"} and listed["kbB"]["documents"] == 1 and listed["empty"]["chunks"] == 0
    assert httpx.post(url + "/v1/kbs", json={"name": "bad name!"}, timeout=10).status_code == 400
    assert httpx.post(url + "/v1/kbs", json={"name": "kbC"}, timeout=10).status_code == 201
    assert httpx.post(url + "/v1/kbs", json={"name": "kbC"}, timeout=10).status_code == 409
    assert httpx.get(url + "/v1/kbs/zzz/documents", timeout=10).status_code == 404
    bad = httpx.post(url + "/v1/kbs/kbB/documents", files={"files": ("x.exe", b"MZ")}, timeout=10)
    assert bad.status_code == 400 and "unsupported" in bad.json()["error"]["message"]

    # kbB is loaded (and cached) before the upload: the next question must still see the new file.
    assert not chat(url, "kbB", "倪子君分享了什么经验？").json()["refused"]
    up = httpx.post(url + "/v1/kbs/kbB/documents", files={"files": ("gamma.txt", GAMMA.encode())}, timeout=30)
    assert up.status_code == 200, up.text
    assert up.json()["files"][0]["status"] == "added"
    docs = httpx.get(url + "/v1/kbs/kbB/documents", timeout=10).json()["data"]
    gamma = [d["doc_id"] for d in docs if d["source"] == "gamma.txt"]
    assert len(gamma) == 1
    answer = chat(url, "kbB", "问源公司的总部位于哪里？").json()
    assert "西湖区" in answer["choices"][0]["message"]["content"]
    assert gamma[0] in {c["doc_id"] for c in answer["citations"]}

    assert httpx.delete(url + f"/v1/kbs/kbB/documents/{gamma[0]}", timeout=30).json()["removed"] == gamma
    assert httpx.delete(url + f"/v1/kbs/kbB/documents/{gamma[0]}", timeout=30).status_code == 404
    after = chat(url, "kbB", "问源公司的总部位于哪里？").json()
    assert gamma[0] not in {c["doc_id"] for c in after["citations"]} and "西湖区" not in after["choices"][0]["message"]["content"]
    passages = httpx.post(url + "/v1/search", json={"question": "问源公司的总部", "kb": "kbB", "top_k": 10}, timeout=10).json()
    assert gamma[0] not in {p["doc_id"] for p in passages["passages"]}
    assert not (root / ".uploads" / "kbB" / "gamma.txt").exists()
    assert loads == ["extractive"]  # reloading a KB reuses the loaded generator

    # The served KB changes too: its cached pipeline is replaced, never served stale.
    a_docs = httpx.get(url + "/v1/kbs/kbA/documents", timeout=10).json()["data"]
    up = httpx.post(url + "/v1/kbs/kbA/documents", files={"files": ("gamma.txt", GAMMA.encode())}, timeout=30)
    assert up.status_code == 200
    assert "西湖区" in httpx.post(url + "/v1/ask", json={"question": "问源公司的总部位于哪里？"}, timeout=30).json()["answer"]
    assert len(httpx.get(url + "/v1/kbs/kbA/documents", timeout=10).json()["data"]) == len(a_docs) + 1

    assert httpx.delete(url + "/v1/kbs/kbC", timeout=10).json()["deleted"] is True
    assert "kbC" not in {k["name"] for k in httpx.get(url + "/v1/kbs", timeout=10).json()["data"]}


def test_mcp_tools_take_a_kb(two_kbs, fake_config, fake_embedder) -> None:
    pytest.importorskip("mcp")
    import asyncio
    import json

    from rag.api.mcp import build_mcp_server
    from rag.api.registry import KBRegistry
    from rag.pipeline import RAG

    _, root = two_kbs
    served = RAG.load_kb("kbA", root, config=fake_config, embedder=fake_embedder)
    server = build_mcp_server(served, "kbA", resolve=KBRegistry(served, "kbA", root=root).get)

    def call(args: dict) -> tuple[bool, str]:
        result = asyncio.run(server.call_tool("search", args))
        return bool(getattr(result, "is_error", False)), "".join(getattr(c, "text", "") for c in result.content)

    error, text = call({"question": "倪子君", "kb": "kbB"})
    assert not error and json.loads(text)["passages"][0]["doc_id"].startswith("kbb")
    error, text = call({"question": "倪子君"})  # no kb: the served one
    assert not error and json.loads(text)["passages"][0]["doc_id"].startswith("kba")
    with pytest.raises(Exception, match="kbB"):  # the tool error names the KBs there are
        call({"question": "倪子君", "kb": "nope"})


def test_ui_searches_the_served_kb_as_the_api_changed_it(tmp_path, fake_config, fake_embedder, open_keys, loads) -> None:  # noqa: F811
    """The chat UI's pipeline follows the API's registry: a file added to the served KB through
    the API is found by the UI's next question, and the UI's own extra index (its uploads) is kept."""
    from rag import kb
    from rag.api.app import create_app
    from rag.api.queue import gated
    from rag.errors import IndexLoadError
    from rag.pipeline import RAG
    from ui.server import _current

    config = fake_config.with_overrides(generation={"backend": "extractive"})
    root, src = tmp_path / "index", tmp_path / "src"
    src.mkdir()
    (src / "alpha.txt").write_text(ALPHA, encoding="utf-8")
    (src / "beta.txt").write_text(BETA, encoding="utf-8")
    kb.create("kbA", root, config)
    kb.add("kbA", [src / "alpha.txt"], config, lambda: fake_embedder, root)
    kb.create("mine", root, config)
    kb.add("mine", [src / "beta.txt"], config, lambda: fake_embedder, root)
    served = RAG.load_kb("kbA", root, config=config, embedder=fake_embedder)
    app = create_app(served, keys=open_keys, kb_name="kbA", index_root=root, served_kbs=["kbA"])
    with running(app) as url:
        ui_rag = gated(served, app.state.api.gate, _current(app.state.api.kbs))
        ui_rag.search_also("uploads", RAG.load_kb("mine", root, config=config, embedder=fake_embedder).indexes[0])
        assert ui_rag.ask("问源公司的总部位于哪里？").refused
        up = httpx.post(url + "/v1/kbs/kbA/documents", files={"files": ("gamma.txt", GAMMA.encode())}, timeout=30)
        assert up.status_code == 200, up.text
        assert "西湖区" in ui_rag.ask("问源公司的总部位于哪里？").text  # the API's change, seen by the UI
        assert "倪子君" in ui_rag.ask("倪子君分享了什么经验？").text  # the UI's uploads still searched
        assert httpx.delete(url + "/v1/kbs/kbA", timeout=10).json()["deleted"] is True
        with pytest.raises(IndexLoadError, match="rag serve"):
            ui_rag.ask("问源公司的总部位于哪里？")  # deleted: a clear error, never the stale index


def test_document_uploads_may_exceed_the_question_body_limit(tmp_path, fake_config, fake_embedder, open_keys, loads) -> None:  # noqa: F811
    from rag import kb
    from rag.api.app import create_app
    from rag.pipeline import RAG

    config = fake_config.with_overrides(generation={"backend": "extractive"})
    root = tmp_path / "index"
    src = tmp_path / "alpha.txt"
    src.write_text(ALPHA, encoding="utf-8")
    kb.create("kbA", root, config)
    kb.add("kbA", [src], config, lambda: fake_embedder, root)
    served = RAG.load_kb("kbA", root, config=config, embedder=fake_embedder)
    app = create_app(served, keys=open_keys, kb_name="kbA", index_root=root, served_kbs=["kbA"],
                     max_body_bytes=1000, max_upload_bytes=20_000)
    big = ("问源公司的总部位于杭州市西湖区的龙井路八号。" * 200).encode()  # about 13 kB
    with running(app) as url:
        r = httpx.post(url + "/v1/ask", json={"question": "问" * 600}, timeout=10)
        assert r.status_code == 413 and "shorter question" in r.json()["error"]["message"]
        up = httpx.post(url + "/v1/kbs/kbA/documents", files={"files": ("gamma.txt", big)}, timeout=30)
        assert up.status_code == 200 and up.json()["files"][0]["status"] == "added", up.text
        huge = httpx.post(url + "/v1/kbs/kbA/documents", files={"files": ("huge.txt", big * 2)}, timeout=30)
        assert huge.status_code == 413 and "fewer or smaller files" in huge.json()["error"]["message"]
