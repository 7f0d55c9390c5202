"""BM25 top-k by MaxScore over posting lists equals scoring every chunk, compiled (numba) or in NumPy."""
from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from rag import lexical
from rag.corpus import load_documents
from rag.chunking import chunk_documents
from rag.lexical import LexicalIndex, tokenize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built_index() -> LexicalIndex:
    docs = load_documents([str(ROOT / "data/articles.txt")])
    chunks = chunk_documents(docs, 300, 1, 0)
    return LexicalIndex.build([c.text for c in chunks])


@pytest.fixture(scope="module", params=["compiled", "numpy"])
def corpus_index(request, built_index) -> LexicalIndex:
    """The corpus index searched by the compiled kernels, then by the NumPy path."""
    index = copy.copy(built_index)
    index.compiled = request.param == "compiled"
    return index


@pytest.fixture(scope="module")
def questions() -> list[str]:
    lines = (ROOT / "eval/dev_questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


def _exhaustive(index: LexicalIndex, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = index.scores(query)
    top = np.argsort(-scores, kind="stable")[:k]
    top = top[scores[top] > 0]
    return top, scores[top]


@pytest.mark.parametrize("k", [1, 5, 30])
def test_search_gives_the_exhaustive_top_k_on_the_dev_questions(corpus_index, questions, k) -> None:
    for q in questions:
        want_pos, want = _exhaustive(corpus_index, q, k)
        pos, got = corpus_index.search(q, k)
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=q)
        # Same chunks, up to which of exactly tied chunks fill the last places.
        if len(want):
            assert set(pos[got > want[-1] + 1e-5]) <= set(want_pos), q


def test_search_prunes_by_reading_only_rare_tokens(corpus_index, monkeypatch) -> None:
    # A rare name and a common word: MaxScore must not fall back to scoring every chunk.
    monkeypatch.setattr(LexicalIndex, "scores", lambda *a: pytest.fail("scored every chunk"))
    pos, scores = corpus_index.search("壹基金的工作", 3)
    assert len(pos) == 3 and scores[0] >= scores[1] >= scores[2] > 0


def test_common_tokens_only_still_give_the_exhaustive_top_k(corpus_index) -> None:
    pos, scores = corpus_index.search("疫情 社会组织 工作", 5)
    np.testing.assert_allclose(scores, _exhaustive(corpus_index, "疫情 社会组织 工作", 5)[1], rtol=1e-5)


def test_score_positions_matches_the_dense_scores(corpus_index, questions) -> None:
    rng = np.random.default_rng(0)
    for q in questions[:20]:
        positions = rng.integers(0, corpus_index.size, 40)  # unsorted, with repeats
        np.testing.assert_allclose(corpus_index.score_positions(q, positions), corpus_index.scores(q)[positions], rtol=1e-5)


def test_unknown_or_empty_queries_find_nothing(corpus_index) -> None:
    for q in ("", "？？？", "zzzqqqxxx"):
        pos, scores = corpus_index.search(q, 5)
        assert len(pos) == 0 and len(scores) == 0
        assert not corpus_index.score_positions(q, [0, 1]).any()


def test_repeated_query_tokens_count_as_often_as_they_occur() -> None:
    index = LexicalIndex.from_tokens([tokenize(t) for t in ("红茶 绿茶", "绿茶 咖啡", "咖啡 可可 可可")])
    pos, scores = index.search("咖啡 咖啡 绿茶", 3)
    np.testing.assert_allclose(scores, _exhaustive(index, "咖啡 咖啡 绿茶", 3)[1], rtol=1e-6)
    assert pos[0] == 1  # holds both tokens


def test_save_and_mmap_load_round_trip(tmp_path, corpus_index, questions) -> None:
    corpus_index.save(tmp_path / "lex")
    assert (tmp_path / "lex" / lexical.TERM_MAX_FILE).exists()
    loaded = LexicalIndex.load(tmp_path / "lex")
    (tmp_path / "lex" / lexical.TERM_MAX_FILE).unlink()  # an index saved before MaxScore search
    legacy = LexicalIndex.load(tmp_path / "lex", mmap=False)
    for q in questions[:10]:
        want = corpus_index.search(q, 10)
        for other in (loaded, legacy):
            got = other.search(q, 10)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


def test_a_term_max_file_of_another_vocabulary_is_refused(tmp_path, corpus_index) -> None:
    corpus_index.save(tmp_path / "lex")
    np.save(tmp_path / "lex" / lexical.TERM_MAX_FILE, np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="vocabulary"):
        LexicalIndex.load(tmp_path / "lex")


def test_coverage_by_substring_search_equals_the_bigram_set_formula() -> None:
    import random

    from rag.textsim import bigrams, coverage

    rng = random.Random(0)
    chars = "社会组织武汉捐款红十字会a1"
    for _ in range(5000):
        q = "".join(rng.choice(chars) for _ in range(rng.randint(0, 6)))
        t = "".join(rng.choice(chars + "，。 ") for _ in range(rng.randint(0, 12)))
        core = bigrams(q)
        assert coverage(core, t) == (len(core & bigrams(t)) / len(core) if core else 0.0), (q, t)


def test_the_compiled_search_is_what_an_install_uses(built_index) -> None:
    # numba is a dependency: an index searches with the kernels unless it is missing.
    assert built_index.compiled


def test_compiled_and_numpy_searches_agree(built_index, questions) -> None:
    numpy_index = copy.copy(built_index)
    numpy_index.compiled = False
    for q in questions:
        for k in (3, 30):
            pos, got = built_index.search(q, k)
            want_pos, want = numpy_index.search(q, k)
            np.testing.assert_array_equal(got, want, err_msg=q)  # the same float sums, in the same order
            assert set(pos[got > want[-1]]) == set(want_pos[want > want[-1]]), q


def test_compiled_search_breaks_ties_by_position() -> None:
    texts = ["绿茶 红茶", "咖啡", "绿茶 红茶", "绿茶 红茶", "可可", "绿茶 红茶"]
    index = LexicalIndex.from_tokens([tokenize(t) for t in texts])
    assert index.compiled
    pos, scores = index.search("红茶", 3)
    assert pos.tolist() == [0, 2, 3] and len(set(scores.tolist())) == 1


def test_compiled_search_from_many_threads_at_once(built_index, questions) -> None:
    # Each search running at once has its own scores array: concurrent queries must not see each other's.
    want = {q: built_index.search(q, 10)[0].tolist() for q in questions}
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def work(part: list[str]) -> None:
        try:
            for _ in range(3):
                for q in part:
                    got[q] = built_index.search(q, 10)[0].tolist()
                    assert got[q] == want[q], q
        except BaseException as e:  # reported below, from the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(questions[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert got == want


def test_without_numba_search_runs_in_numpy(monkeypatch, questions) -> None:
    monkeypatch.setattr(lexical, "_kernels", lambda: None)
    index = LexicalIndex.from_tokens([tokenize(t) for t in ("红茶 绿茶", "绿茶 咖啡", "咖啡 可可 可可")])
    assert not index.compiled
    pos, scores = index.search("咖啡 可可", 2)
    assert pos.tolist() == [2, 1] and scores[0] > scores[1] > 0


def test_posting_arrays_that_do_not_fit_together_are_refused(built_index) -> None:
    bm25 = copy.copy(built_index._bm25)
    bm25.scores = dict(bm25.scores, indptr=np.asarray(bm25.scores["indptr"])[:-1])  # one list short
    with pytest.raises(ValueError, match="do not fit together"):
        LexicalIndex(bm25)


def test_a_posting_beyond_the_index_is_an_error_not_a_crash(built_index, questions) -> None:
    # The compiled search writes a score per posting: a damaged position must raise, not corrupt memory.
    bm25 = copy.copy(built_index._bm25)
    indices = np.array(bm25.scores["indices"])
    indptr = np.asarray(bm25.scores["indptr"])
    long_lists = np.flatnonzero(np.diff(indptr) >= 2)
    indices[indptr[long_lists + 1] - 1] = built_index.size + 1000  # each list's last posting, after the others were added
    bm25.scores = dict(bm25.scores, indices=indices)
    damaged = LexicalIndex(bm25)
    assert damaged.compiled
    with pytest.raises(ValueError, match="damaged; rebuild"):
        damaged.search(questions[0], 5)
    # The scores array that search left half-filled is not reused: the next search starts from zero.
    damaged._indices = np.asarray(built_index._bm25.scores["indices"])
    for q in questions[:10]:
        np.testing.assert_array_equal(damaged.search(q, 5)[1], built_index.search(q, 5)[1])
