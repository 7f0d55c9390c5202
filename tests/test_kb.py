"""Knowledge bases (rag/kb.py, `rag kb`): named index folders, incremental adds, atomic removal."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rag import kb
from rag.cli import cli
from rag.errors import RagError
from rag.index import Index
from tests.conftest import FakeEmbedder

TEA = "龙井茶产于杭州西湖一带，是中国著名的绿茶。龙井茶以色绿、香郁、味甘、形美四绝著称。"
PANDA = "大熊猫主要生活在四川的山林里，以竹子为食。大熊猫是中国的国宝，深受人们喜爱。"


def long_text(last: str = "最后一段说明结束。") -> str:
    """Several chunks (300-character budget): a change in the last sentence touches only the last chunk."""
    parts = [f"第{i}部分介绍长江流域第{i}个城市的历史、人口和经济发展情况，" + "这里的居民世代以农业和渔业为生，" * 4 + "。"
             for i in range(1, 9)]
    return "".join(parts) + last


class CountingEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed_passages(self, texts):
        self.embedded.extend(texts)
        return super().embed_passages(texts)

    embed_queries = FakeEmbedder.embed_passages


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An index root in tmp (via WENYUAN_INDEX_ROOT) and the fake embedder everywhere."""
    monkeypatch.setenv("WENYUAN_INDEX_ROOT", str(tmp_path / "kbs"))
    monkeypatch.setattr("rag.embedding.Embedder", lambda *a, **k: FakeEmbedder())
    monkeypatch.setattr("rag.pipeline.Embedder", lambda *a, **k: FakeEmbedder())
    return tmp_path / "kbs"


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "tea.txt").write_text(TEA, encoding="utf-8")
    (d / "panda.md").write_text("# 大熊猫\n\n" + PANDA, encoding="utf-8")
    return d


def run(*args: str, input: str | None = None):
    result = CliRunner().invoke(cli, list(args), input=input)
    return result


def test_cli_round_trip(root, files):
    r = run("kb", "create", "notes")
    assert r.exit_code == 0, r.output
    assert "created knowledge base notes" in r.output
    assert (root / "notes" / "manifest.json").exists()
    assert "already exists" in run("kb", "create", "notes").output

    r = run("kb", "add", "notes", str(files / "tea.txt"), str(files / "panda.md"))
    assert r.exit_code == 0, r.output
    assert f"added      {(files / 'tea.txt').resolve()} (1 documents, 1 chunks, 1 embedded)" in r.output
    assert "panda.md" in r.output

    r = run("kb", "list")
    line = next(x for x in r.output.splitlines() if x.startswith("notes"))
    assert line.split()[:3] == ["notes", "2", "2"]

    r = run("kb", "docs", "notes")
    rows = [x.split("\t") for x in r.output.strip().splitlines()]
    assert {(row[0], row[1], row[3]) for row in rows} == {
        ("tea", str((files / "tea.txt").resolve()), "1 chunks"), ("panda", str((files / "panda.md").resolve()), "1 chunks")}

    r = run("kb", "add", "notes", str(files / "tea.txt"))
    assert r.output.startswith("unchanged  ") and r.exit_code == 0

    r = run("kb", "remove", "notes", "tea")
    assert r.exit_code == 0 and "removed 1 documents from notes: tea" in r.output
    r = run("kb", "remove", "notes", str(files / "panda.md"))  # by path
    assert "removed 1 documents from notes: panda" in r.output
    assert "has no documents" in run("kb", "docs", "notes").output
    assert run("kb", "list").output.split("\n")[1].split()[:3] == ["notes", "0", "0"]

    r = run("kb", "delete", "notes", input="n\n")
    assert r.exit_code != 0 and (root / "notes").exists()
    r = run("kb", "delete", "notes", "--yes")
    assert r.exit_code == 0 and not (root / "notes").exists()
    assert "no knowledge bases" in run("kb", "list").output


def test_errors_say_how_to_fix(root, files, tmp_path):
    kb.create("a")
    with pytest.raises(RagError, match=r"no knowledge base 'b' .*existing: a.*rag kb create b"):
        kb.add("b", [files / "tea.txt"])
    r = run("search", "龙井", "--kb", "b")
    assert r.exit_code != 0 and "existing: a" in r.output
    kb.add("a", [files / "tea.txt"], embedder_factory=FakeEmbedder)
    with pytest.raises(RagError, match=r"no document 'nope' in knowledge base 'a'.*rag kb docs a"):
        kb.remove("a", ["tea", "nope"])
    assert [d.doc_id for d in kb.documents("a")] == ["tea"]  # nothing removed
    bad = tmp_path / "x.exe"
    bad.write_text("whatever content here", encoding="utf-8")
    with pytest.raises(RagError, match=r"unsupported file type \.exe; use one of"):
        kb.add("a", [bad], embedder_factory=FakeEmbedder)
    kb.create("empty")
    r = run("search", "龙井", "--kb", "empty")
    assert "has no documents yet; add some with `rag kb add empty" in r.output


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b", "名字", "-x", "x" * 65, "a b"])
def test_invalid_names(root, name):
    with pytest.raises(RagError, match="invalid knowledge base name"):
        kb.create(name)


def test_valid_names(root):
    for name in ("default", "work-notes", "A_1"):
        kb.create(name)
    assert kb.names() == ["A_1", "default", "work-notes"]


def test_search_over_two_kbs(root, files):
    from rag.pipeline import RAG

    kb.create("tea")
    kb.create("zoo")
    kb.add("tea", [files / "tea.txt"], embedder_factory=FakeEmbedder)
    kb.add("zoo", [files / "panda.md"], embedder_factory=FakeEmbedder)
    r = run("search", "龙井茶和大熊猫", "--kb", "tea", "--kb", "zoo", "--json")
    assert r.exit_code == 0, r.output
    assert {row["doc_id"] for row in json.loads(r.output)} == {"tea", "panda"}
    only = json.loads(run("search", "龙井茶和大熊猫", "--kb", "zoo", "--json").output)
    assert {row["doc_id"] for row in only} == {"panda"}
    rag = RAG.load_kb(["tea", "zoo"])
    assert {p.doc_id for p in rag.retrieve("龙井茶和大熊猫", top_k=5)} == {"tea", "panda"}
    assert {p.doc_id for p in RAG.load_kb("tea").retrieve("大熊猫", top_k=5)} == {"tea"}


def test_index_root_option_and_env(tmp_path, files, monkeypatch):
    monkeypatch.delenv("WENYUAN_INDEX_ROOT", raising=False)
    monkeypatch.setattr("rag.embedding.Embedder", lambda *a, **k: FakeEmbedder())
    other = tmp_path / "elsewhere"
    assert run("kb", "create", "x", "--index-root", str(other)).exit_code == 0
    assert (other / "x" / "manifest.json").exists()
    assert run("kb", "add", "x", str(files / "tea.txt"), "--index-root", str(other)).exit_code == 0
    assert "x " in run("kb", "list", "--index-root", str(other)).output
    monkeypatch.setenv("WENYUAN_INDEX_ROOT", str(other))
    assert run("kb", "list").output.split("\n")[1].split()[:3] == ["x", "1", "1"]
    from rag.config import default_index_dir

    assert default_index_dir() == other / "default"


def test_changed_file_embeds_only_changed_chunks(root, tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(long_text(), encoding="utf-8")
    kb.create("k")
    emb = CountingEmbedder()
    first = kb.add("k", [path], embedder_factory=lambda: emb)
    n = first[0].chunks
    assert n >= 3 and first[0].embedded == n == len(emb.embedded)

    emb.embedded.clear()
    again = kb.add("k", [path], embedder_factory=lambda: emb)
    assert again[0].status == "unchanged" and emb.embedded == []

    path.write_text(long_text("最后一段已经改写，新增了内容。"), encoding="utf-8")
    changed = kb.add("k", [path], embedder_factory=lambda: emb)
    assert changed[0].status == "updated" and changed[0].chunks == n
    assert len(emb.embedded) == changed[0].embedded == 1
    assert "新增了内容" in emb.embedded[0]
    docs = kb.documents("k")
    assert [d.doc_id for d in docs] == ["long"]  # replaced, not duplicated
    index = Index.load(root / "k")
    assert len(index.chunks) == n and any("新增了内容" in c.text for c in index.chunks)


def test_changes_tokenise_only_new_chunks_and_rank_as_a_fresh_build(root, tmp_path, monkeypatch):
    import rag.kb_reuse as reuse
    from rag.lexical import TOKENS_FILE, LexicalIndex, tokenize

    seen: list[str] = []
    monkeypatch.setattr(reuse, "tokenize", lambda text: seen.append(text) or tokenize(text))
    long = tmp_path / "long.txt"
    long.write_text(long_text(), encoding="utf-8")
    tea = tmp_path / "tea.txt"
    tea.write_text(TEA, encoding="utf-8")
    kb.create("k")
    kb.add("k", [long], embedder_factory=FakeEmbedder)
    n = len(seen)
    assert n >= 3
    seen.clear()
    kb.add("k", [tea], embedder_factory=FakeEmbedder)
    assert seen == [TEA]  # the long file's chunks kept their tokens
    seen.clear()
    kb.remove("k", [str(long)])
    assert seen == []
    # A KB saved before tokens were kept (no tokens file) tokenises all its chunks once.
    kb.add("k", [long], embedder_factory=FakeEmbedder)
    (root / "k" / "lexical" / TOKENS_FILE).unlink()
    seen.clear()
    kb.remove("k", [str(tea)])
    assert len(seen) == n

    # Ranking is that of an index built from scratch over the same chunks.
    index = Index.load(root / "k")
    fresh = LexicalIndex.build([c.text for c in index.chunks])
    for question in ("长江流域第3个城市的历史", "居民世代以农业和渔业为生", "最后一段说明"):
        got, want = index.lexical.search(question, 5), fresh.search(question, 5)
        assert got[0].tolist() == want[0].tolist() and len(got[0]) > 0, question
        assert got[1].tolist() == pytest.approx(want[1].tolist()), question


def test_doc_ids_stay_unique(root, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "note.txt").write_text(TEA, encoding="utf-8")
    (tmp_path / "b" / "note.txt").write_text(PANDA, encoding="utf-8")
    kb.create("k")
    kb.add("k", [tmp_path / "a" / "note.txt"], embedder_factory=FakeEmbedder)
    kb.add("k", [tmp_path / "b" / "note.txt"], embedder_factory=FakeEmbedder)
    assert sorted(d.doc_id for d in kb.documents("k")) == ["note", "note~2"]
    assert kb.remove("k", [str(tmp_path / "b" / "note.txt")]) == ["note~2"]


def test_removed_document_is_never_served(root, files):
    from rag.pipeline import RAG

    kb.create("k")
    kb.add("k", [files], embedder_factory=FakeEmbedder)
    assert "tea" in {p.doc_id for p in RAG.load_kb("k").retrieve("龙井茶", top_k=5)}
    kb.remove("k", ["tea"])
    rag = RAG.load_kb("k")
    for q in ("龙井茶", "杭州西湖绿茶", "色绿香郁味甘形美"):
        assert "tea" not in {p.doc_id for p in rag.retrieve(q, top_k=5)}
    index = Index.load(root / "k", verify_hashes=True)
    assert [d.id for d in index.documents] == ["panda"]
    assert {c.doc_id for c in index.chunks} == {"panda"}
    assert index.faiss_index.ntotal == index.lexical.size == len(index.vectors) == len(index.chunks)
    assert str((files / "tea.txt").resolve()) not in index.manifest["kb"]["files"]
    r = run("search", "龙井茶", "--kb", "k", "--json")
    assert "tea" not in {row["doc_id"] for row in json.loads(r.output)}
    # adding it back works and reuses nothing stale
    kb.add("k", [files / "tea.txt"], embedder_factory=FakeEmbedder)
    assert "tea" in {p.doc_id for p in RAG.load_kb("k").retrieve("龙井茶", top_k=5)}


def test_removal_is_atomic(root, files, monkeypatch):
    from rag.pipeline import RAG

    kb.create("k")
    kb.add("k", [files], embedder_factory=FakeEmbedder)

    def boom(tmp, index_dir):
        raise OSError("disk full")

    monkeypatch.setattr("rag.index.replace_folder", boom)
    with pytest.raises(OSError, match="disk full"):
        kb.remove("k", ["tea"])
    index = Index.load(root / "k", verify_hashes=True)
    assert {d.id for d in index.documents} == {"tea", "panda"}
    assert "tea" in {p.doc_id for p in RAG.load_kb("k").retrieve("龙井茶", top_k=5)}
    assert [p.name for p in root.iterdir() if p.name.startswith(".k.tmp")] == []
