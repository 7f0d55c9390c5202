"""UI tests without a browser: HTML rendering, uploads, the chat callback and the API.

The pipeline is real (tests/data/mini.txt indexed with the fake embedder); the
generator is scripted, so no model is loaded.
"""
from __future__ import annotations

import html
import json
import re
import socket
from pathlib import Path

import pytest

pytest.importorskip("gradio")

from rag.errors import CorpusError  # noqa: E402
from rag.pipeline import RAG  # noqa: E402
from rag.records import Answer, Chunk, Citation, Passage  # noqa: E402
from ui.render import (  # noqa: E402
    answer_message,
    answer_payload,
    highlight,
    link_markers,
    merge_spans,
    passages_html,
    sources_html,
    text_html,
)
from ui.uploads import UploadError, UserDocuments, safe_filename  # noqa: E402
from conftest import ScriptedGenerator, install_generator  # noqa: E402

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'




@pytest.fixture
def rag(mini_rag) -> RAG:
    return mini_rag


def _script(rag: RAG, *replies: str) -> ScriptedGenerator:
    gen = ScriptedGenerator(*replies)
    gen.backend = rag.config.generation.backend  # pretend to be the configured backend (no fallback notice)
    install_generator(rag, gen)
    return gen


def _passage(text: str, doc_id: str = "doc-009", title: str = "标题") -> Passage:
    chunk = Chunk(id=f"{doc_id}#0", doc_id=doc_id, text=text, start=0, end=len(text), title=title)
    return Passage(chunk=chunk, score=0.9, dense_score=0.8, lexical_score=3.2)


def _marked(fragment: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r"<mark>(.*?)</mark>", fragment, re.S)]


# --- rendering -------------------------------------------------------------


def test_text_is_escaped_for_html_and_markdown() -> None:
    out = text_html(XSS + " *粗体* [链接](x)")
    assert "<script" not in out and "<img" not in out
    assert "&lt;script&gt;" in out and r"\*粗体\*" in out and r"\[链接\]\(x\)" in out


def test_highlight_marks_exact_offsets_and_escapes() -> None:
    text = "前文<b>引用</b>后文"
    start = text.index("<b>")
    end = text.index("后文")
    out = highlight(text, [(start, end)])
    assert out == "前文<mark>&lt;b&gt;引用&lt;/b&gt;</mark>后文"
    assert _marked(out) == [text[start:end]]


def test_spans_are_clipped_and_merged() -> None:
    assert merge_spans([(5, 9), (0, 2), (1, 3), (8, 20), (4, 4)], 12) == [(0, 3), (5, 12)]
    assert _marked(highlight("零一二三四五六七八九", [(7, 9), (1, 3)])) == ["一二", "七八"]


def test_only_verified_markers_become_links() -> None:
    out = link_markers("答案[1]，另见[3]。<i>", known={1})
    assert out.count('class="wy-cite"') == 1 and 'href="#wy-src-1"' in out
    assert r"\[3\]" in out and "&lt;i&gt;" in out


def test_sources_mark_each_quote_inside_its_passage() -> None:
    p1 = _passage("甲公司出资3亿元，用于抗疫。乙公司出资1亿元。", "doc-001", "甲公司")
    p2 = _passage(XSS + "丙公司出资2亿元。", "doc-002", XSS)
    q1 = "甲公司出资3亿元"
    q2 = "丙公司出资2亿元"
    cites = (
        Citation(1, "doc-001", p1.chunk_id, q1, 0, len(q1)),
        Citation(2, "doc-002", p2.chunk_id, q2, p2.text.index(q2), p2.text.index(q2) + len(q2)),
    )
    answer = Answer(question="谁出资？", text="甲公司出资3亿元[1]，丙公司出资2亿元[2]。", citations=cites, passages=(p1, p2))
    out = sources_html(answer)
    assert _marked(out) == [q1, q2]
    assert 'id="wy-src-1"' in out and 'id="wy-src-2"' in out
    assert "<script" not in out and "<img" not in out and "&lt;script&gt;window.__xss=1&lt;/script&gt;" in out
    message = answer_message(answer)
    assert message.count('class="wy-cite"') == 2
    quoted = Answer(question="?", text=XSS + "[1]", citations=cites[:1], passages=(p1,))
    assert "<script" not in answer_message(quoted) and "<img" not in answer_message(quoted)


def test_refusal_lists_closest_passages_as_not_supporting() -> None:
    passages = tuple(_passage(f"段落{i}的内容。", f"doc-00{i}") for i in range(1, 6))
    answer = Answer(question="？", text="根据现有资料无法回答这个问题。", refused=True, passages=passages)
    out = sources_html(answer)
    assert "无法根据现有资料回答" in out and "不足以支持回答" in out
    assert out.count("wy-nosupport") == 3 and out.count("不支持回答</span>") == 3
    assert "<mark>" not in out and 'id="wy-src' not in out
    assert "无法回答" in answer_message(answer)


def test_passages_table_scores_toggle_and_timings() -> None:
    answer = Answer(
        question="q", text="t", passages=(_passage(XSS),), timings={"retrieve_ms": 12.3, "total_ms": 40.0, "evidence": 0.5},
        backend="extractive",
    )
    shown = passages_html(answer, show_scores=True)
    assert "融合 0.900" in shown and "向量 0.800" in shown and "词项 3.200" in shown
    assert "检索 12 ms" in shown and "总计 40 ms" in shown
    assert "<script" not in shown
    assert "融合" not in passages_html(answer, show_scores=False)


def test_notice_shown_only_when_the_answer_fell_back() -> None:
    fell_back = Answer(question="q", text="t", backend="extractive", notice="生成模型无法加载")
    assert "生成模型无法加载" in answer_message(fell_back)
    assert "注意" not in answer_message(Answer(question="q", text="t", backend="extractive"))


# --- uploads ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("/abs/path/notes.MD", "notes.md"),
        ("C:\\Users\\x\\a b;rm -rf.csv", "a_b_rm_-rf.csv"),
        (".hidden.jsonl", "hidden.jsonl"),
        ("..txt", "document.txt"),
        ("报告 2020.txt", "报告_2020.txt"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


@pytest.mark.parametrize("name", ["evil.exe", "x.txt/..", "archive.tar.gz", "noext"])
def test_safe_filename_rejects_unsupported(name: str) -> None:
    with pytest.raises(UploadError):
        safe_filename(name)


def test_upload_is_indexed_and_searched_with_the_corpus(rag, tmp_path) -> None:
    docs = UserDocuments(rag, tmp_path / "user")
    src = tmp_path / "in" / "我的笔记.txt"
    src.parent.mkdir()
    src.write_text("问源测试公司的吉祥物名叫小蓝鲸，它住在青岛海边。", encoding="utf-8")
    summary = docs.add([src])
    assert "我的笔记.txt" in summary
    assert [p.name for p in docs.files()] == ["我的笔记.txt"]
    assert not any((tmp_path / "user" / "staging").iterdir())
    assert rag.retrieve("问源测试公司的吉祥物叫什么？", top_k=1)[0].doc_id == "我的笔记"
    assert rag.retrieve("腾讯基金会计划出资多少？", top_k=1)[0].doc_id == "doc-001"


def test_each_upload_is_read_once(rag, tmp_path, monkeypatch) -> None:
    """Validation parses a file and the KB keeps that parse: a scanned PDF is not OCR'd twice."""
    import rag.corpus as corpus
    from rag import kb

    reads: list[str] = []
    real = corpus.read_raw

    def counted(path, *args, **kwargs):
        reads.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(corpus, "read_raw", counted)
    docs = UserDocuments(rag, tmp_path / "user")
    docs.add(_two_uploads(tmp_path))
    assert sorted(reads) == ["farm.md", "吉祥物.txt"]
    # The documents name the kept file, not the staging copy they were parsed from.
    sources = sorted(d.source for d in kb.documents("uploads", tmp_path / "user"))
    assert sources == sorted(str(p.resolve()) for p in docs.files())
    assert rag.retrieve("星河农场的南瓜节门票多少钱？", top_k=1)[0].doc_id == "farm"


def test_bad_upload_keeps_nothing_and_the_previous_index(rag, tmp_path) -> None:
    docs = UserDocuments(rag, tmp_path / "user")
    good = tmp_path / "good.md"
    good.write_text("# 小蓝鲸\n问源测试公司的吉祥物名叫小蓝鲸。", encoding="utf-8")
    docs.add([good])
    manifest = (docs.index_dir / "manifest.json").read_text(encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "一条正常的记录，内容足够长。"}\n{not json}\n', encoding="utf-8")
    other = tmp_path / "other.txt"
    other.write_text("另一份正常的文档内容，足够长。", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl.*line 2") as err:
        docs.add([other, bad])
    assert str(tmp_path) not in str(err.value)
    assert [p.name for p in docs.files()] == ["good.md"]
    assert (docs.index_dir / "manifest.json").read_text(encoding="utf-8") == manifest
    assert not any(docs.staging_dir.iterdir())


def test_upload_limits(rag, tmp_path) -> None:
    docs = UserDocuments(rag, tmp_path / "user", max_files=2, max_file_bytes=100)
    big = tmp_path / "big.txt"
    big.write_text("长" * 100, encoding="utf-8")
    with pytest.raises(UploadError, match="超过"):
        docs.add([big])
    files = []
    for i in range(3):
        f = tmp_path / f"f{i}.txt"
        f.write_text(f"第{i}份文档的内容足够长。", encoding="utf-8")
        files.append(f)
    with pytest.raises(UploadError, match="最多 2 个文件"):
        docs.add(files)
    assert docs.files() == []


def _two_uploads(tmp_path):
    whale = tmp_path / "in" / "吉祥物.txt"
    whale.parent.mkdir(exist_ok=True)
    whale.write_text("问源测试公司的吉祥物名叫小蓝鲸，它住在青岛海边。", encoding="utf-8")
    farm = tmp_path / "in" / "farm.md"
    farm.write_text("# 星河农场\n星河农场每年秋天举办南瓜节，南瓜节的门票免费。", encoding="utf-8")
    return whale, farm


def _doc_ids(rag, question: str) -> list[str]:
    return [p.doc_id for p in rag.retrieve(question, top_k=50)]


def test_uploads_live_in_a_knowledge_base(rag, tmp_path) -> None:
    from rag import kb

    docs = UserDocuments(rag, tmp_path / "user")
    docs.add(_two_uploads(tmp_path))
    assert kb.names(tmp_path / "user") == ["uploads"] and docs.index_dir == tmp_path / "user" / "uploads"
    assert [(f.name, f.documents) for f in docs.listing()] == [("farm.md", 1), ("吉祥物.txt", 1)]
    assert all(f.chunks >= 1 for f in docs.listing())
    held = json.loads((docs.index_dir / "manifest.json").read_text(encoding="utf-8"))["kb"]["files"]
    assert sorted(held) == sorted(str(p.resolve()) for p in docs.files())


def test_upload_clashing_with_a_corpus_id_is_renamed(rag, tmp_path) -> None:
    clash = tmp_path / "clash.jsonl"
    clash.write_text(json.dumps({"id": "doc-001", "text": "上传的记录，与默认资料的编号相同，但内容不同。"}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    docs = UserDocuments(rag, tmp_path / "user")
    docs.add([clash])
    ids = [p.doc_id for p in rag.retrieve("上传的记录与默认资料的编号相同", top_k=50)]
    assert ids.count("doc-001") == 1 and any(i != "doc-001" and "doc-001" in i for i in ids), ids


def test_remove_upload_in_the_ui_then_restart(rag, tmp_path) -> None:
    from ui.app import build_app

    data_dir = tmp_path / "user"
    demo = build_app(rag, data_dir=data_dir)
    add_files, remove_file, ask = _fn(demo, "add_files"), _remover(demo), _fn(demo, "ask")
    steps = []
    status, _, listing, choices = add_files([str(p) for p in _two_uploads(tmp_path)],
                                            progress=lambda fraction, desc: steps.append(desc))
    assert "完成" in status and "已添加 2 个文件" in status, status
    assert [d for d in steps if d.startswith("读取")] == ["读取第 1/2 个文件：吉祥物.txt", "读取第 2/2 个文件：farm.md"]
    assert "吉祥物.txt" in listing and "farm.md" in listing and "2 个文件" in listing and "<th>页数</th>" in listing
    assert sorted(choices.choices) == [("farm.md", "farm.md"), ("吉祥物.txt", "吉祥物.txt")]
    assert _doc_ids(rag, "问源测试公司的吉祥物叫什么？")[0] == "吉祥物"
    assert "farm" in _doc_ids(rag, "星河农场的南瓜节门票多少钱？")
    payload = ask("问源测试公司的吉祥物叫什么？", 5, "extractive")
    assert "吉祥物" in [p["doc_id"] for p in payload["passages"]]

    status, listing, choices = remove_file("吉祥物.txt")
    assert "已移除 吉祥物.txt" in status and "还有 1 个文件" in status, status
    assert "吉祥物" not in listing and "farm.md" in listing
    assert choices.choices == [("farm.md", "farm.md")] and choices.value is None
    assert [p.name for p in demo.user_documents.files()] == ["farm.md"]
    assert "吉祥物" not in _doc_ids(rag, "问源测试公司的吉祥物叫什么？")
    assert "farm" in _doc_ids(rag, "星河农场的南瓜节门票多少钱？")
    payload = ask("问源测试公司的吉祥物叫什么？", 10, "extractive")
    assert all(p["doc_id"] != "吉祥物" and "小蓝鲸" not in p["text"] for p in payload["passages"])
    assert "doc-001" in _doc_ids(rag, "腾讯基金会计划出资多少？")  # the default corpus is untouched

    status, listing, _ = remove_file("不存在.txt")
    assert "未移除" in status and "没有 不存在.txt" in status and "farm.md" in status, status
    assert "farm.md" in listing
    assert "请先选择要移除的文件" in remove_file(None)[0]

    # A restart: a fresh RAG over the default index, restored from the data dir.
    fresh = RAG(rag.indexes, rag.config, embedder=rag.embedder)
    again = build_app(fresh, data_dir=data_dir)
    assert "吉祥物" not in _doc_ids(fresh, "星河农场的南瓜节门票多少钱？") and "farm" not in _doc_ids(fresh, "星河农场")
    assert again.user_documents.restore() == 1
    assert [f.name for f in again.user_documents.listing()] == ["farm.md"]
    assert "farm" in _doc_ids(fresh, "星河农场的南瓜节门票多少钱？")
    assert "吉祥物" not in _doc_ids(fresh, "问源测试公司的吉祥物叫什么？")

    status, listing, _ = _remover(again)("farm.md")
    assert "还有 0 个文件" in status and "还没有上传文档" in listing
    assert "farm" not in _doc_ids(fresh, "星河农场的南瓜节门票多少钱？")
    assert UserDocuments(RAG(rag.indexes, rag.config, embedder=rag.embedder), data_dir).restore() == 0


def test_restore_finishes_a_removal_cut_short(rag, tmp_path) -> None:
    docs = UserDocuments(rag, tmp_path / "user")
    docs.add(_two_uploads(tmp_path))
    (docs.files_dir / "farm.md").unlink()  # the file left files/ but the KB still held it
    fresh = RAG(rag.indexes, rag.config, embedder=rag.embedder)
    assert UserDocuments(fresh, tmp_path / "user").restore() == 1
    assert [f.name for f in UserDocuments(fresh, tmp_path / "user").listing()] == ["吉祥物.txt"]
    assert "farm" not in _doc_ids(fresh, "星河农场的南瓜节门票多少钱？")


def test_restore_adds_files_kept_before_the_knowledge_base(rag, tmp_path) -> None:
    files = tmp_path / "user" / "files"  # the layout of earlier versions: files/ without a KB
    files.mkdir(parents=True)
    for src in _two_uploads(tmp_path):
        (files / src.name).write_bytes(src.read_bytes())
    docs = UserDocuments(rag, tmp_path / "user")
    assert docs.restore() == 2
    assert [f.name for f in docs.listing()] == ["farm.md", "吉祥物.txt"]
    assert _doc_ids(rag, "问源测试公司的吉祥物叫什么？")[0] == "吉祥物"


# --- the app ---------------------------------------------------------------


def _fn(demo, name: str):
    return next(f.fn for f in demo.fns.values() if f.name == name)


def _remover(demo):
    """The panel's two-step removal as one call: "移除" must ask first, then "确认移除" removes."""
    ask_remove, do_remove = _fn(demo, "ask_remove"), _fn(demo, "do_remove")

    def remove(name):
        status, pending, box, question = ask_remove(name)
        if name is None:
            assert pending is None and not box.visible and "请先" in status
            return status, None, None
        assert pending == name and box.visible and "确认移除" in question and "未移除" not in status
        status, pending, box, listing, choices = do_remove(pending)
        assert pending is None and not box.visible
        return status, listing, choices

    return remove


def test_chat_streams_then_renders_sources_and_keeps_history(rag, tmp_path) -> None:
    from ui.app import build_app

    gen = _script(rag, "腾讯基金会计划出资3亿元[1]。", "该计划由V基金协助执行[1]。")
    demo = build_app(rag, data_dir=tmp_path / "user")
    respond = _fn(demo, "answer_stream")
    backend = rag.config.generation.backend
    shown = []  # what the chat showed at each step (the callback reuses its list)
    for step in respond("腾讯基金会计划出资多少？", [], [], 5, backend, True):
        shown.append(step[0][-1]["content"])
    chat, box, pairs, sources, passages, answer = step
    assert len(shown) > 3 and shown[1].endswith("▌") and shown[2].endswith("▌")  # streamed pieces
    assert box == "" and len(chat) == 2 and pairs == [("腾讯基金会计划出资多少？", answer.text)]
    assert 'class="wy-cite"' in chat[1]["content"] and "<mark>" in sources and "融合" in passages
    steps = list(respond("由谁协助执行？", chat, pairs, 5, backend, True))
    chat, _, pairs, _, passages, answer = steps[-1]
    assert len(chat) == 4 and len(pairs) == 2
    # The follow-up names no subject: it is asked about the earlier turn's subject, and still
    # asks for what the follow-up asked (who assists with the execution).
    standalone = answer.standalone_question
    assert answer.question == "由谁协助执行？"
    assert "腾讯基金会" in standalone and "协助执行" in standalone and "谁" in standalone, standalone
    assert gen.questions[-1] == standalone  # the generator was asked the rewritten question
    assert not answer.refused and "V基金" in answer.text and answer.citations[0].doc_id == "doc-001", answer.text
    assert "V基金" in chat[3]["content"]


def test_chat_shows_library_errors_without_traceback(rag, tmp_path) -> None:
    from ui.app import build_app

    respond = _fn(build_app(rag, data_dir=tmp_path / "user"), "answer_stream")
    chat, _, pairs, *_ = list(respond("   ", [], [], 5, rag.config.generation.backend, True))[-1]
    assert "wy-error" in chat[-1]["content"] and "Traceback" not in chat[-1]["content"]
    assert pairs == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ask_api_with_gradio_client(rag, tmp_path) -> None:
    from gradio_client import Client

    from ui.app import build_app, launch_app

    _script(rag, "腾讯基金会计划出资3亿元[1]。")
    demo = build_app(rag, data_dir=tmp_path / "user")
    port = _free_port()
    launch_app(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        result = client.predict("腾讯基金会计划出资多少？", 5, rag.config.generation.backend, api_name="/ask")
        assert result["refused"] is False and "3亿元" in result["answer"]
        cite = result["citations"][0]
        passage = result["passages"][cite["marker"] - 1]
        assert passage["text"][cite["start"] : cite["end"]] == cite["quote"] and cite["doc_id"] == "doc-001"
        json.dumps(result)
        with pytest.raises(Exception, match="问题|empty"):
            client.predict("", 5, rag.config.generation.backend, api_name="/ask")
    finally:
        demo.close()


def test_payload_is_json_ready() -> None:
    answer = Answer(question="q", text="t[1]", citations=(Citation(1, "d", "d#0", "t", 0, 1),), passages=(_passage("t"),))
    data = json.loads(json.dumps(answer_payload(answer)))
    assert data["citations"][0]["quote"] == "t" and data["passages"][0]["doc_id"] == "doc-009"
