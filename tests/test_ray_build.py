"""`rag index build --engine ray`: the Ray Data build equals the single-process build."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rag import dense
from rag.config import Config
from rag.corpus import expand_paths, load_documents, read_raw
from rag.engine_ray import _fold
from rag.normalize import normalize_text


def _rows(paths):
    files = expand_paths(paths)
    rows = []
    for file_no, path in enumerate(files):
        for seq, raw in enumerate(read_raw(path)):
            rows.append({"file": file_no, "seq": seq, "id": raw.id, "text": normalize_text(raw.text),
                         "title": normalize_text(raw.title) if raw.title else "", "source": raw.source})
    return rows, files


def test_fold_matches_load_documents(tmp_path) -> None:
    """The driver-side fold of rows read by Ray tasks gives load_documents' documents."""
    shutil.copy("tests/data/mini.txt", tmp_path / "a.txt")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"id": "doc-001", "text": "同一个编号出现在第二个文件里，应当加上文件名。"}, ensure_ascii=False) + "\n"
        + json.dumps({"id": "x1", "text": (tmp_path / "a.txt").read_text(encoding="utf-8").splitlines()[1]}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    rows, files = _rows([tmp_path])
    rows.reverse()  # Ray may hand rows back in any order; the fold sorts them
    assert _fold(rows, files) == load_documents([tmp_path])


@pytest.mark.slow
def test_ray_build_retrieves_like_the_local_build(tmp_path) -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        pytest.skip("Ray is not installed (optional extra: pip install -e '.[ray]')")
    from rag.build import build_index
    from rag.engine_ray import RayEngine
    from rag.index import Index
    from rag.pipeline import RAG

    # float32 sentence-transformers on both sides, so vectors can be compared closely.
    config = Config().with_overrides(embedding={"engine": "sentence-transformers"})
    questions = [json.loads(line)["question"] for line in open("eval/dev_questions.jsonl", encoding="utf-8")]
    # The single-process reference: the repository's index when it is current, else built here.
    if _current("index/default", config):
        local = RAG([Index.load("index/default")], config)
    else:
        local = RAG.build(["data/articles.txt"], index_dir=tmp_path / "local", config=config)

    engine = RayEngine(config, workers=2)
    try:
        docs = engine.load_documents(["data/articles.txt"])
        assert docs == load_documents(["data/articles.txt"])
        built = build_index(["data/articles.txt"], tmp_path / "ray", config, lambda: engine, documents=docs, engine=engine)
        assert built.manifest["build_engine"] == "ray"
        assert [c.id for c in built.chunks] == [c.id for c in local.indexes[0].chunks]
        np.testing.assert_allclose(built.vectors, local.indexes[0].vectors, atol=1e-4)
        # IVF shards built on Ray around one trained quantizer equal the single-process IVF index.
        sharded = engine.build_faiss(built.vectors, "ivf")
        single = dense.build_faiss(built.vectors, "ivf")
        queries = built.vectors[::50]
        np.testing.assert_array_equal(dense.search(sharded, queries, 10)[1], dense.search(single, queries, 10)[1])
    finally:
        engine.shutdown()

    ray_rag = RAG([Index.load(tmp_path / "ray")], config, embedder=local.embedder)
    for question, a, b in zip(questions, local.retrieve_batch(questions, 5), ray_rag.retrieve_batch(questions, 5)):
        assert [p.chunk_id for p in a] == [p.chunk_id for p in b], question


def _current(index_dir: str, config: Config) -> bool:
    from rag.build import _fingerprint
    from rag.corpus import corpus_hash
    from rag.index import Index

    try:
        index = Index.load(index_dir, embedding_model=config.embedding.model)
    except Exception:  # noqa: BLE001 - any problem means "build a reference here"
        return False
    if index.manifest["embedding"].get("engine") not in (None, "sentence-transformers"):
        return False
    # The FAISS type does not change the vectors or chunks the comparison is about.
    wanted = _fingerprint(config, corpus_hash(load_documents(["data/articles.txt"])))
    have = dict(index.manifest.get("fingerprint", {}))
    return {k: v for k, v in have.items() if k != "faiss_type_requested"} == {k: v for k, v in wanted.items() if k != "faiss_type_requested"}


def test_cli_engine_ray_without_ray_says_how_to_install(monkeypatch, tmp_path) -> None:
    import sys

    from click.testing import CliRunner

    from rag.cli import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = CliRunner().invoke(cli, ["index", "build", "tests/data/mini.txt", "--index-dir", str(tmp_path / "idx"), "--engine", "ray"])
    assert result.exit_code == 1
    assert "pip install -e '.[ray]'" in result.output
