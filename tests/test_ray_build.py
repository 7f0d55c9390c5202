"""`rag index build --engine ray` on a real two-node Ray cluster equals the single-process build."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading

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


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, one CPU each; ``ray stop`` afterwards, whatever happened."""
    from rag.engine_ray import LocalCluster

    root = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    nodes = LocalCluster(root, nodes=2, cpus_per_node=1)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(root, ignore_errors=True)


def _alive_nodes(address: str) -> set[str]:
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_two_node_cli_build_retrieves_like_the_local_build(cluster, tmp_path, capsys) -> None:
    """`rag index build --engine ray --ray-address` on two nodes: every stage with many blocks ran
    on both, and the index gives the single-process build's top 5 for every dev question."""
    from rag.index import Index
    from rag.pipeline import RAG

    nodes = _alive_nodes(cluster.address)
    assert len(nodes) == 2
    config = Config()  # the real embedder, as `rag index build` uses it
    done = subprocess.run([sys.executable, "-m", "rag.cli", "index", "build", "data/articles.txt", "--index-dir", str(tmp_path / "ray"),
                           "--engine", "ray", "--ray-address", cluster.address], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    built = Index.load(tmp_path / "ray")
    manifest = built.manifest
    assert manifest["build_engine"] == "ray"
    # Reading is one task per file (one file here) and 605 vectors make one FAISS shard;
    # chunking, embedding (one actor per node) and tokenising run in many blocks.
    for stage in ("chunk", "embed", "tokenize"):
        assert set(manifest["placement"][stage]) == nodes, stage
        assert sum(manifest["placement"][stage].values()) == len(built.chunks), stage

    # The single-process reference: the repository's index when it is current, else built here.
    if _current("index/default", config):
        local = RAG([Index.load("index/default")], config)
    else:
        local = RAG.build(["data/articles.txt"], index_dir=tmp_path / "local", config=config)
    reference = local.indexes[0]
    assert manifest["embedding"]["engine"] == reference.manifest["embedding"]["engine"]
    assert [c.id for c in built.chunks] == [c.id for c in reference.chunks]
    cosines = np.sum(np.asarray(built.vectors) * np.asarray(reference.vectors), axis=1)
    assert cosines.min() > 0.999
    ray_rag = RAG([built], config, embedder=local.embedder)
    questions = [json.loads(line)["question"] for line in open("eval/dev_questions.jsonl", encoding="utf-8")]
    for question, a, b in zip(questions, local.retrieve_batch(questions, 5), ray_rag.retrieve_batch(questions, 5)):
        assert [p.chunk_id for p in a] == [p.chunk_id for p in b], question
    with capsys.disabled():
        n = len(built.chunks)
        print(f"\n[ray build] 2 nodes x 1 CPU: {n / manifest['timings']['total_s']:.1f} chunks/s "
              f"({manifest['timings']['total_s']:.1f} s, embed {manifest['timings']['embed_s']:.1f} s); "
              f"single process: {n / reference.manifest['timings']['total_s']:.1f} chunks/s ({reference.manifest['timings']['total_s']:.1f} s)")


@pytest.mark.slow
def test_ray_tokens_and_ivf_shards_equal_the_single_process_ones(cluster) -> None:
    from rag.chunking import chunk_documents
    from rag.engine_ray import RayEngine
    from rag.lexical import tokenize

    config = Config()
    texts = [c.text for c in chunk_documents(load_documents(["data/articles.txt"]), 300, 1, 80)]
    engine = RayEngine(config, address=cluster.address)
    try:
        assert engine.tokenize(texts) == [tokenize(t) for t in texts]
        assert len(engine.placement["tokenize"]) == 2
        # IVF shards built on Ray around one trained quantizer equal the single-process IVF index.
        vectors = np.random.default_rng(0).standard_normal((3000, 64)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        sharded = engine.build_faiss(vectors, "ivf")
        assert len(engine.placement["faiss"]) == 2
        single = dense.build_faiss(vectors, "ivf")
        queries = vectors[::50]
        np.testing.assert_array_equal(dense.search(sharded, queries, 10)[1], dense.search(single, queries, 10)[1])
    finally:
        engine.shutdown()
    # No Ray Data telemetry thread outlives the build in this process (it polled a Prometheus
    # that is not there and logged tracebacks while other tests ran).
    assert "data-usage-metrics-poller" not in {t.name for t in threading.enumerate()}


def _current(index_dir: str, config: Config) -> bool:
    """Whether ``index_dir`` is what a local build of the default corpus with ``config`` would make."""
    from rag.build import _fingerprint
    from rag.corpus import corpus_hash
    from rag.embedding import choose_engine
    from rag.index import Index

    try:
        index = Index.load(index_dir, embedding_model=config.embedding.model)
    except Exception:  # noqa: BLE001 - any problem means "build a reference here"
        return False
    if index.manifest["embedding"].get("engine") != choose_engine(config.embedding) or index.manifest.get("build_engine") != "local":
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
