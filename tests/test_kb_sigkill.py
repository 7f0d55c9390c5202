"""A KB removal killed with SIGKILL mid-way leaves the KB exactly as before or exactly as after.

The removal runs in a child process that stops at a chosen step of `kb.remove` (it writes a
marker file, then sleeps); the parent kills it with SIGKILL and inspects the KB from disk:
either the document is fully present (manifest, chunk store, FAISS, BM25; the KB loads and
answers) or it is gone from every retrieval path - never half. Running the removal again then
completes, leftovers of the killed process are cleaned, and after a restart (a fresh load
from disk) no retrieval path (dense, lexical, hybrid) ever returns the document again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rag import kb
from rag.config import Config
from rag.index import Index
from tests.conftest import ROOT, FakeEmbedder

TEA = "龙井茶产于杭州西湖一带，是中国著名的绿茶。龙井茶以色绿、香郁、味甘、形美四绝著称。"
PANDA = "大熊猫主要生活在四川的山林里，以竹子为食。大熊猫是中国的国宝，深受人们喜爱。"
TEA_QUERIES = ("龙井茶", "杭州西湖绿茶", "色绿香郁味甘形美")
MODES = ("dense", "lexical", "hybrid")

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

# The child: patch one step of the removal path to write the marker and sleep, then remove "tea".
# `kb.remove` needs no embedder (it reuses the stored vectors), so the child loads no model.
CHILD = r"""
import os, pathlib, sys, time
marker, point = pathlib.Path(sys.argv[1]), sys.argv[2]
import rag.index as ri
from rag import kb

def hold():
    marker.write_text(str(os.getpid()))
    time.sleep(300)

if point == "writing":  # FAISS, vectors and chunks written; documents.jsonl half written
    real_write = ri._write_jsonl
    def write(path, records):
        if pathlib.Path(path).name == "documents.jsonl":
            with open(path, "w", encoding="utf-8") as f:
                f.write('{"id": "pan')
                f.flush()
            hold()
        return real_write(path, records)
    ri._write_jsonl = write
elif point == "before_swap":  # new index complete and fsynced in the temp folder, not yet renamed
    ri.replace_folder = lambda tmp, index_dir: hold()
elif point == "after_swap":  # atomic exchange done; the temp folder (now the old index) not yet deleted
    real_exchange = ri._exchange
    def exchange(a, b):
        ok = real_exchange(a, b)
        if ok:
            hold()
        return ok
    ri._exchange = exchange
elif point == "between_renames":  # no atomic swap (old kernel/fs): killed between the two renames
    ri._exchange = lambda a, b: False
    real_rename = pathlib.Path.rename
    def rename(self, target):
        out = real_rename(self, target)
        if pathlib.Path(target).name.startswith(".k.old-"):
            hold()
        return out
    pathlib.Path.rename = rename
else:
    raise SystemExit("unknown point " + point)
kb.remove("k", ["tea"])
marker.write_text("finished")
"""


@pytest.fixture
def root(tmp_path, monkeypatch):
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


def kill_removal_at(point: str, root: Path, tmp_path: Path) -> int:
    """Run `kb.remove("k", ["tea"])` in a child, SIGKILL it at ``point``; return its pid."""
    marker = tmp_path / f"marker-{point}"
    env = dict(os.environ, WENYUAN_INDEX_ROOT=str(root), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), point], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()):
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"child exited ({proc.returncode}) before reaching {point}:\n{err.decode()[-3000:]}")
            assert time.monotonic() < deadline, f"child never reached {point}"
            time.sleep(0.02)
        assert marker.read_text() == str(proc.pid), "the removal finished: the hook was never hit"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def retrieved(mode: str, query: str) -> set[str]:
    """Doc ids one retrieval path returns for ``query`` from the KB "k", loaded afresh from disk."""
    from rag.pipeline import RAG

    config = Config().with_overrides(retrieval={"fusion": mode})
    return {p.doc_id for p in RAG.load_kb("k", config=config).retrieve(query, top_k=5)}


def assert_tea_present(root: Path) -> None:
    """Exactly the state before the removal: "tea" in every store and found by every path."""
    folder = root / "k"
    # Through the KB layer first (what the CLI, API and UI use): it loads and answers.
    assert {d.doc_id for d in kb.documents("k")} == {"tea", "panda"}
    for mode in MODES:
        assert "tea" in retrieved(mode, "龙井茶"), mode
    index = Index.load(folder, verify_hashes=True)
    assert {d.id for d in index.documents} == {"tea", "panda"}
    assert {c.doc_id for c in index.chunks} == {"tea", "panda"}
    assert index.faiss_index.ntotal == index.lexical.size == len(index.vectors) == len(index.chunks) == 2
    tea = next(i for i, c in enumerate(index.chunks) if c.doc_id == "tea")
    # FAISS: the tea chunk's own vector finds it first; BM25: it scores for a tea query.
    from rag import dense

    _, pos = dense.search(index.faiss_index, np.asarray(index.vectors[tea : tea + 1], dtype=np.float32), 1)
    assert int(pos[0][0]) == tea
    assert index.lexical.scores("龙井茶")[tea] > 0
    m = kb.read_manifest(folder)
    assert m["counts"]["documents"] == 2 and m["counts"]["chunks"] == 2
    assert any(e["docs"] == ["tea"] for e in m["kb"]["files"].values())


def assert_tea_gone(root: Path) -> None:
    """Exactly the state after the removal: "tea" in no store and returned by no path."""
    folder = root / "k"
    assert [d.doc_id for d in kb.documents("k")] == ["panda"]
    index = Index.load(folder, verify_hashes=True)
    assert [d.id for d in index.documents] == ["panda"]
    assert {c.doc_id for c in index.chunks} == {"panda"}
    assert index.faiss_index.ntotal == index.lexical.size == len(index.vectors) == len(index.chunks) == 1
    assert not any("龙井" in c.text for c in index.chunks)
    m = kb.read_manifest(folder)
    assert m["counts"]["documents"] == 1 and m["counts"]["chunks"] == 1
    assert not any("tea" in e["docs"] for e in m["kb"]["files"].values())
    for mode in MODES:
        for q in TEA_QUERIES:
            assert "tea" not in retrieved(mode, q), (mode, q)
        assert "panda" in retrieved(mode, "大熊猫"), mode


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".k.tmp", ".k.old")))


# point -> the state a reader must see right after the kill
CASES = {
    "writing": "before",
    "before_swap": "before",
    "after_swap": "after",
    "between_renames": "before",
}


@pytest.mark.parametrize("point", list(CASES))
def test_removal_killed_midway_is_all_or_nothing(point, root, files, tmp_path):
    kb.create("k")
    kb.add("k", [files], embedder_factory=FakeEmbedder)
    assert_tea_present(root)

    pid = kill_removal_at(point, root, tmp_path)
    assert leftovers(root), "the kill should have left the child's temporary/old folder behind"
    if point == "between_renames":  # raw state: the KB folder renamed away; the KB layer puts it back
        assert not (root / "k").exists()

    # Right after the kill: exactly before or exactly after, and the KB loads and answers.
    (assert_tea_present if CASES[point] == "before" else assert_tea_gone)(root)

    # The leftover does not break a later add (lock released by the kill, leftover cleaned).
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "river.txt").write_text("长江是中国最长的河流，流经多个省份。", encoding="utf-8")
    kb.add("k", [extra / "river.txt"], embedder_factory=FakeEmbedder)
    assert leftovers(root) == [], f"leftovers of killed pid {pid} not cleaned"
    assert "river" in retrieved("hybrid", "长江")

    # Running the removal again completes (or, if the killed one took effect, says it is gone).
    if CASES[point] == "before":
        assert kb.remove("k", ["tea"]) == ["tea"]
    else:
        with pytest.raises(Exception, match="no document 'tea'"):
            kb.remove("k", ["tea"])
    assert leftovers(root) == []

    # A restart: everything loaded fresh from disk; no path ever returns "tea" again.
    index = Index.load(root / "k", verify_hashes=True)
    assert sorted(d.id for d in index.documents) == ["panda", "river"]
    assert "tea" not in {c.doc_id for c in index.chunks}
    assert index.faiss_index.ntotal == index.lexical.size == len(index.vectors) == len(index.chunks) == 2
    for mode in MODES:
        for q in TEA_QUERIES:
            assert "tea" not in retrieved(mode, q), (mode, q)
    assert sorted(d.doc_id for d in kb.documents("k")) == ["panda", "river"]


def test_leftover_temp_folder_does_not_break_remove(root, files, tmp_path):
    """A kill leaving a temp folder, then the very next operation being a removal."""
    kb.create("k")
    kb.add("k", [files], embedder_factory=FakeEmbedder)
    kill_removal_at("before_swap", root, tmp_path)
    assert leftovers(root)
    assert kb.remove("k", ["tea"]) == ["tea"]
    assert leftovers(root) == []
    assert_tea_gone(root)


def test_kill_between_renames_never_looks_like_a_missing_kb(root, files, tmp_path):
    """Fallback swap (no renameat2) killed between its renames: the KB must not look absent, and
    following the old error's advice (`rag kb create k`) must not wipe it with an empty KB."""
    from rag.errors import RagError

    kb.create("k")
    kb.add("k", [files], embedder_factory=FakeEmbedder)
    kill_removal_at("between_renames", root, tmp_path)
    assert not (root / "k").exists() and leftovers(root)  # the raw state the kill left
    with pytest.raises(RagError, match="already exists"):
        kb.create("k")
    assert leftovers(root) == []
    assert_tea_present(root)
    assert [i.name for i in kb.list_kbs()] == ["k"]
