"""Build an index with Ray Data: reading, chunking and embedding run as Ray jobs.

``rag index build --engine ray [--ray-address ADDR]`` joins an existing cluster
(``ray.init(address=...)``) or starts a local one. The stages:

1. read: one task per file reads and normalises its documents; the driver
   folds duplicates in file order exactly as :func:`rag.corpus.load_documents`;
2. chunk: documents are split into chunks by ``map_batches``;
3. embed: ``map_batches`` with a callable class, so each worker loads the
   embedding model once and embeds many batches;
4. index: each block of vectors becomes one FAISS shard (for IVF, a copy of
   one coarse quantizer trained on the driver); the driver merges the shards in
   row order (:func:`rag.dense.merge`);
5. tokenise: ``map_batches`` splits chunks into BM25 tokens with jieba.

The driver indexes the tokens for BM25 and writes the index, as in a local
build. Every stage records which node ran how many rows (``placement``, kept
in the manifest).
Ray is an optional extra: ``pip install -e '.[ray]'``. Workers must be able to
import ``rag`` (installed in the cluster's environment).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from rag import dense
from rag.build import build_index
from rag.chunking import chunk_documents
from rag.config import ChunkConfig, Config, EmbeddingConfig
from rag.corpus import expand_paths, fold_documents, read_raw
from rag.errors import ConfigError, CorpusError, RagError
from rag.index import Index
from rag.normalize import normalize_text
from rag.records import Chunk, Document

logger = logging.getLogger(__name__)

EMBED_BATCH = 128  # rows a worker embeds per call; enough to amortise the call overhead
TOKENIZE_BATCH = 500  # chunks a task tokenises: about a second of jieba, so task overhead stays small


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 - fail here, not inside a job, when the data extra is missing
    except ImportError as e:
        raise ConfigError("the ray engine needs Ray Data: pip install -e '.[ray]' (ray[data]>=2.9)") from e
    return ray


def _node() -> str:
    """Id of the Ray node running the caller."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _read_files(batch: dict[str, np.ndarray], csv_text_column: str, max_bytes: int) -> dict[str, list]:
    """Ray task: raw documents of each file, normalised (order kept).

    ``path`` is absolute (workers need not share the driver's working directory);
    ``name``, the path as given, is the documents' source, as in ``load_documents``.
    """
    rows: dict[str, list] = {k: [] for k in ("file", "seq", "id", "text", "title", "source")}
    node = _node()
    for file_no, path, name in zip(batch["file"], batch["path"], batch["name"]):
        for seq, raw in enumerate(read_raw(Path(path), csv_text_column, max_bytes)):
            for key, value in (("file", int(file_no)), ("seq", seq), ("id", raw.id), ("text", normalize_text(raw.text)),
                               ("title", normalize_text(raw.title) if raw.title else ""), ("source", str(name))):
                rows[key].append(value)
    rows["node"] = [node] * len(rows["file"])
    return rows


def _fold(rows: list[dict[str, Any]], files: list[Path]) -> list[Document]:
    """Deduplicate normalised rows exactly as ``load_documents`` does (same ids, titles and aliases)."""
    ordered = sorted(rows, key=lambda r: (r["file"], r["seq"]))
    return fold_documents((files[r["file"]], r["id"], r["text"], r["title"], r["source"]) for r in ordered)


def _chunk_batch(batch: dict[str, np.ndarray], chunking: dict) -> dict[str, list]:
    """Ray task: chunks of a batch of documents, as ``chunk_documents`` makes them."""
    docs = [Document(id=i, text=t, title=ti) for i, t, ti in zip(batch["id"], batch["text"], batch["title"])]
    chunks = chunk_documents(docs, chunking["max_chars"], chunking["overlap_sentences"], chunking["context_chars"])
    # Locations stay out of the Arrow rows (an empty struct has no Arrow type); this
    # engine reads documents without located spans, so every location is {} anyway.
    rows = {f.name: [getattr(c, f.name) for c in chunks] for f in dataclasses.fields(Chunk) if f.name != "location"}
    rows["node"] = [_node()] * len(chunks)
    return rows


def _tokenize_batch(batch: dict[str, np.ndarray]) -> dict[str, list]:
    """Ray task: BM25 tokens of a batch of chunk texts."""
    from rag.lexical import tokenize

    return {"pos": list(batch["pos"]), "tokens": [tokenize(str(t)) for t in batch["text"]],
            "node": [_node()] * len(batch["pos"])}


class _EmbedWorker:
    """Ray actor body: loads the embedder once, then embeds every batch it is given."""

    def __init__(self, embedding: dict, factory: Callable[[], object] | None = None) -> None:
        from rag.embedding import Embedder

        self.embedder = factory() if factory is not None else Embedder(EmbeddingConfig(**embedding))
        self.node = _node()
        self.engine = str(getattr(self.embedder, "engine", None))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.embedder.embed_passages([str(t) for t in batch["text"]])
        n = len(vectors)
        return {"pos": batch["pos"], "vector": vectors, "node": np.array([self.node] * n), "engine": np.array([self.engine] * n)}


def _shard(batch: dict[str, np.ndarray], empty: bytes) -> dict[str, list]:
    """Ray task: one FAISS shard per block of vectors, each a copy of the shared empty index."""
    import faiss

    out: dict[str, list] = {"first": [], "shard": [], "rows": [], "node": []}
    for first, vectors in zip(batch["first"], batch["vectors"]):
        index = faiss.deserialize_index(np.frombuffer(empty, dtype=np.uint8))
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        out["first"].append(int(first))
        out["shard"].append(faiss.serialize_index(index).tobytes())
        out["rows"].append(len(vectors))
        out["node"].append(_node())
    return out


class RayEngine:
    """The stages of a build, run as Ray Data jobs; plugs into :func:`rag.build.build_index`.

    Args:
        address: Ray cluster to join (``ray.init(address=...)``); None starts a local one.
        workers: embedding actors (default: one per CPU the cluster offers, at most 4).
        cpus_per_worker: CPUs each embedding actor reserves (and its torch threads).
        embedder: zero-argument callable each embedding actor calls once to make its
            embedder (must pickle; default: ``rag.embedding.Embedder`` of ``config.embedding``).

    ``placement`` maps each stage run so far to ``{node id: rows}``.
    """

    name = "ray"

    def __init__(self, config: Config, address: str | None = None, workers: int | None = None, cpus_per_worker: int = 1,
                 embedder: Callable[[], object] | None = None) -> None:
        self.ray = _ray()
        self.config = config
        ctx_args: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
        # Documents stay local, so Ray's usage telemetry stays off unless the user turned it on. This
        # also keeps Ray Data from leaving a metrics-polling thread in the caller's process.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")
        try:
            self.ray.init(address=address, **ctx_args) if address else self.ray.init(**ctx_args)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RagError(f"cannot start or join Ray at {address or 'a local instance'}: {e}") from e
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self.cpus_per_worker = max(1, cpus_per_worker)
        self.workers = workers or max(1, min(4, cpus // self.cpus_per_worker))
        context = self.ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # row i of every stage stays row i
        context.enable_progress_bars = False
        self.dimension: int | None = None
        self.engine: str | None = None  # the embedding engine the workers ran, once they have embedded
        self.embedder_factory = embedder
        self.placement: dict[str, dict[str, int]] = {}
        logger.info("ray engine: %d CPUs, %d embedding workers", cpus, self.workers)

    def load_documents(self, paths: Iterable[str | Path]) -> list[Document]:
        files = expand_paths(paths)
        if not files:
            raise CorpusError("no document files given; pass .txt, .md, .jsonl or .csv files or a folder holding them")
        ds = self.ray.data.from_items([{"file": i, "path": str(p.resolve()), "name": str(p)} for i, p in enumerate(files)])
        ds = ds.map_batches(_read_files, fn_kwargs={"csv_text_column": self.config.corpus.csv_text_column,
                                                    "max_bytes": self.config.corpus.max_file_bytes}, batch_size=1)
        rows = ds.take_all()
        self._place("read", (r["node"] for r in rows))
        return _fold(rows, files)

    def chunk_documents(self, docs: list[Document], chunking: ChunkConfig) -> list[Chunk]:
        rows = [{"id": d.id, "text": d.text, "title": d.title} for d in docs]
        ds = self.ray.data.from_items(rows).map_batches(_chunk_batch, fn_kwargs={"chunking": dataclasses.asdict(chunking)}, batch_size=16)
        fields = [f.name for f in dataclasses.fields(Chunk) if f.name != "location"]
        rows = ds.take_all()
        self._place("chunk", (r["node"] for r in rows))
        return [Chunk(**{k: r[k] for k in fields}) for r in rows]

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        embedding = dict(dataclasses.asdict(self.config.embedding), threads=self.cpus_per_worker)
        ds = self.ray.data.from_items([{"pos": i, "text": t} for i, t in enumerate(texts)])
        ds = ds.map_batches(_EmbedWorker, fn_constructor_kwargs={"embedding": embedding, "factory": self.embedder_factory},
                            batch_size=EMBED_BATCH,
                            compute=self.ray.data.ActorPoolStrategy(size=self.workers), num_cpus=self.cpus_per_worker,
                            batch_format="numpy")
        out = np.zeros((len(texts), 0), dtype=np.float32)
        nodes: Counter = Counter()
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            nodes.update(str(n) for n in batch["node"])
            self.engine = str(batch["engine"][0])
            vectors = np.stack(batch["vector"]).astype(np.float32)
            if out.shape[1] == 0:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch["pos"]] = vectors
        self.placement["embed"] = dict(nodes)
        self.dimension = out.shape[1]
        return out

    def build_faiss(self, vectors: np.ndarray, kind: str):
        """One shard per block of ``vectors``, merged in row order."""
        import faiss

        n, dim = vectors.shape
        kind = dense.choose_type(kind, n)
        if kind == "hnsw":
            logger.info("HNSW indexes do not merge; building it on the driver")
            return dense.build_faiss(vectors, kind)
        empty = faiss.serialize_index(dense.new_index(kind, dim, n, train=vectors)).tobytes()
        # One row per block of vectors (not per vector): a million rows would cost more than the shards.
        bounds = np.linspace(0, n, max(1, min(self.workers * 2, n // 1000 or 1)) + 1, dtype=int)
        rows = [{"first": int(a), "vectors": vectors[a:b]} for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        ds = self.ray.data.from_items(rows).map_batches(_shard, fn_kwargs={"empty": empty}, batch_size=1, batch_format="numpy")
        shards = sorted(ds.take_all(), key=lambda r: r["first"])
        per_node: Counter = Counter()
        for s in shards:
            per_node[s["node"]] += int(s["rows"])
        self.placement["faiss"] = dict(per_node)
        logger.info("merging %d FAISS shards of %s", len(shards), kind)
        return dense.merge([faiss.deserialize_index(np.frombuffer(s["shard"], dtype=np.uint8)) for s in shards])

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        """BM25 tokens of each text (``rag.lexical.tokenize``), made by Ray tasks; order kept."""
        if not texts:
            return []
        ds = self.ray.data.from_items([{"pos": i, "text": t} for i, t in enumerate(texts)])
        ds = ds.map_batches(_tokenize_batch, batch_size=TOKENIZE_BATCH, batch_format="numpy")
        out: list[list[str]] = [[] for _ in texts]
        nodes: Counter = Counter()
        for row in ds.iter_rows():
            out[int(row["pos"])] = [str(t) for t in row["tokens"]]
            nodes[row["node"]] += 1
        self.placement["tokenize"] = dict(nodes)
        return out

    def _place(self, stage: str, nodes: Iterable[str]) -> None:
        self.placement[stage] = dict(Counter(nodes))

    def shutdown(self) -> None:
        self.ray.shutdown()


def build_index_ray(
    paths: Iterable[str | Path],
    index_dir: str | Path,
    config: Config,
    address: str | None = None,
    workers: int | None = None,
    force: bool = False,
) -> Index:
    """Like :func:`rag.build.build_index`, with reading, chunking, embedding, FAISS shards and BM25 tokens on Ray."""
    paths = [str(p) for p in paths]
    engine = RayEngine(config, address=address, workers=workers)
    try:
        docs = engine.load_documents(paths)
        return build_index(paths, index_dir, config, lambda: engine, force=force, documents=docs, engine=engine)
    finally:
        if address is None:
            engine.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """A Ray cluster of several nodes on this machine, started with ``ray start`` (tests, benchmarks).

    Each node is a separate raylet with its own CPUs, temp folder and ports, so
    Ray schedules across them as across machines; node ``i`` > 0 also offers the
    custom resource ``node<i+1>``. ``stop`` runs ``ray stop``, which ends every
    Ray process of this user on the machine::

        with LocalCluster(nodes=2, root=tmp) as cluster:
            build_index_ray(paths, index_dir, config, address=cluster.address)
    """

    def __init__(self, root: str | Path, nodes: int = 2, cpus_per_node: int = 1, object_store_mb: int = 1000,
                 timeout_s: float = 120.0) -> None:
        self.root = Path(root)
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.object_store_mb = object_store_mb
        self.timeout_s = timeout_s
        self.address = f"127.0.0.1:{_free_port()}"

    def _ray(self, *args: str) -> None:
        script = Path(sys.executable).with_name("ray")  # the ray of this environment, so workers import this rag
        command = [str(script) if script.exists() else "ray", *args]
        # A throwaway cluster on the loopback interface. Ray (2.60) turns token auth on for a head
        # that finds ~/.ray/auth_token (which any local ray.init() writes) but not for the nodes
        # joining it, so the mode is said explicitly unless the user chose one.
        env = {"RAY_AUTH_MODE": "disabled", **os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout_s, env=env)
        if done.returncode != 0:
            raise RagError(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr[-2000:]}")

    def start(self) -> "LocalCluster":
        common = ["--num-cpus", str(self.cpus_per_node), "--object-store-memory", str(self.object_store_mb * 2**20),
                  "--disable-usage-stats"]
        for i in range(self.nodes):
            # Ports a second raylet on the same host would otherwise take from the first.
            ports = ["--dashboard-agent-listen-port", str(_free_port()), "--min-worker-port", str(20000 + 1000 * i),
                     "--max-worker-port", str(20999 + 1000 * i)]
            temp = ["--temp-dir", str(self.root / f"node{i + 1}")]
            if i == 0:
                self._ray("start", "--head", "--port", self.address.rsplit(":", 1)[1], "--include-dashboard", "false",
                          *common, *ports, *temp)
            else:
                self._ray("start", "--address", self.address, "--resources", json.dumps({f"node{i + 1}": 1}),
                          *common, *ports, *temp)
        return self

    def stop(self) -> None:
        self._ray("stop", "--force")

    def __enter__(self) -> "LocalCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
