"""The chat UI's choice of knowledge bases under `rag serve`: one, several or another, uploads always searched."""
from __future__ import annotations

import httpx
import pytest

from test_api_kb import GAMMA, loads, make_two_kbs  # noqa: F401  (fixture)
from test_api_server import open_keys, running  # noqa: F401  (fixture)

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

TENCENT = "腾讯基金会计划出资多少？"
BEIJING = "北京幸福公益基金会理事长倪子君分享了什么经验？"
HANGZHOU = "问源公司的总部位于哪里？"


@pytest.fixture
def served(tmp_path, fake_config, fake_embedder, open_keys, loads):  # noqa: F811
    """(url, app) of the UI and API over an index root holding kbA (served) and kbB."""
    from rag.pipeline import RAG
    from ui.server import build_server

    config, root = make_two_kbs(tmp_path, fake_config, fake_embedder)
    rag = RAG.load_kb("kbA", root, config=config, embedder=fake_embedder)
    app = build_server(rag, data_dir=tmp_path / "user", keys=open_keys, kb_name="kbA", index_root=root,
                       served_kbs=["kbA"])
    with running(app) as url:
        yield url, app


def docs_found(client: Client, question: str, kbs=None) -> set[str]:
    args = (question, 10, "extractive") if kbs is None else (question, 10, "extractive", kbs)
    return {p["doc_id"] for p in client.predict(*args, api_name="/ask")["passages"]}


def test_the_ui_searches_the_knowledge_bases_chosen(served, tmp_path) -> None:
    url, app = served
    config = httpx.get(url + "/config", timeout=30).json()
    chooser = [c["props"] for c in config["components"] if c.get("props", {}).get("elem_id") == "wy-kbs"]
    assert [[choice[1] for choice in p["choices"]] for p in chooser] == [["kbA", "kbB"]] and chooser[0]["value"] == ["kbA"]
    assert chooser[0]["visible"] is True
    client = Client(url + "/", verbose=False)
    assert docs_found(client, TENCENT) == {"kba"}  # no choice: the served KB
    assert docs_found(client, BEIJING, ["kbB"]) == {"kbb"}
    assert docs_found(client, BEIJING, ["kbA", "kbB"]) == {"kba", "kbb"}
    answer = client.predict(BEIJING, 10, "extractive", ["kbA", "kbB"], api_name="/ask")
    assert answer["refused"] is False and answer["citations"][0]["doc_id"] == "kbb"

    # An upload is searched whatever is chosen, also by a choice made before it.
    note = tmp_path / "note.txt"
    note.write_text(GAMMA, encoding="utf-8")
    app.state.demo.user_documents.add([note])
    for kbs in (None, ["kbB"], ["kbA", "kbB"]):
        assert "note" in docs_found(client, HANGZHOU, kbs), kbs
    app.state.demo.user_documents.remove("note.txt")
    for kbs in (None, ["kbB"], ["kbA", "kbB"]):
        assert "note" not in docs_found(client, HANGZHOU, kbs), kbs

    with pytest.raises(Exception, match="请至少选择一个知识库"):
        client.predict(TENCENT, 10, "extractive", [], api_name="/ask")
    # A KB deleted through the API is no longer searched, alone or together with another.
    assert httpx.delete(url + "/v1/kbs/kbB", timeout=30).status_code == 200
    with pytest.raises(Exception, match="kbB"):
        client.predict(BEIJING, 10, "extractive", ["kbB"], api_name="/ask")
    with pytest.raises(Exception, match="kbB"):
        client.predict(BEIJING, 10, "extractive", ["kbA", "kbB"], api_name="/ask")
    assert docs_found(client, TENCENT) == {"kba"}
