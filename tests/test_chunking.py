from __future__ import annotations

import pytest

from rag.chunking import chunk_documents, chunk_text, split_sentences
from rag.corpus import load_documents

TEXT = "第一句话很短。第二句话稍微长一点，有逗号！第三句？“引号里的句子。”最后一句没有句号"


def test_split_sentences_cover_text_and_keep_closing_quotes() -> None:
    spans = split_sentences(TEXT)
    parts = [TEXT[s:e] for s, e in spans]
    assert "".join(parts) == TEXT
    assert parts == ["第一句话很短。", "第二句话稍微长一点，有逗号！", "第三句？", "“引号里的句子。”", "最后一句没有句号"]


def test_chunks_respect_budget_and_overlap() -> None:
    spans = chunk_text(TEXT, max_chars=20, overlap_sentences=1)
    texts = [TEXT[s:e] for s, e in spans]
    assert all(len(t) <= 20 for t in texts)
    # every sentence is inside some chunk, and consecutive chunks share one sentence
    assert texts[0] == "第一句话很短。"
    assert texts[1] == "第二句话稍微长一点，有逗号！第三句？"
    assert texts[2] == "第三句？“引号里的句子。”"


def test_long_sentence_is_cut_at_commas() -> None:
    long = "甲" * 30 + "，" + "乙" * 30 + "，" + "丙" * 30 + "。"
    spans = chunk_text(long, max_chars=40, overlap_sentences=0)
    assert [long[s:e] for s, e in spans] == ["甲" * 30 + "，", "乙" * 30 + "，", "丙" * 30 + "。"]


@pytest.mark.parametrize("budget", [150, 200, 500])
def test_default_corpus_offsets_reproduce_text(budget: int) -> None:
    docs = {d.id: d for d in load_documents(["data/articles.txt"])}
    chunks = chunk_documents(docs.values(), max_chars=budget)
    assert len({c.id for c in chunks}) == len(chunks)
    for c in chunks:
        assert docs[c.doc_id].text[c.start : c.end] == c.text
        assert len(c.text) <= budget
    # chunks of a document cover all of it
    for doc in docs.values():
        covered = set()
        for c in chunks:
            if c.doc_id == doc.id:
                covered.update(range(c.start, c.end))
        assert all(i in covered for i, ch in enumerate(doc.text) if not ch.isspace())
