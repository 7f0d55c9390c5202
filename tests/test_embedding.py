"""The fast embedding engines (int8 ONNX on ONNX Runtime and OpenVINO) against the float32 sentence-transformers model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag import embedding
from rag.config import EmbeddingConfig
from rag.embedding import Embedder, choose_engine, ensure_onnx_int8, resolve_embedding_model
from rag.errors import ConfigError, ModelError

PASSAGES = [
    "长江是中国第一长河，全长约六千三百公里，发源于青藏高原的唐古拉山脉，流经十一个省级行政区，最后在上海注入东海。",
    "光合作用是绿色植物利用光能，把二氧化碳和水合成有机物并释放氧气的过程，主要在叶绿体中进行。",
    "唐朝诗人李白被后人誉为“诗仙”，他的诗歌想象丰富、语言奔放，代表作有《将进酒》《蜀道难》等。",
    "人工智能的一个分支是机器学习，它让计算机从数据中学习规律，而不是依靠人工编写的全部规则。",
]
QUERIES = ["中国最长的河流是哪条？", "植物怎样制造氧气？"]


def _model_folder() -> Path:
    return Path(resolve_embedding_model(EmbeddingConfig().model))


def test_auto_picks_the_fastest_installed_int8_backend_on_cpu(monkeypatch):
    assert choose_engine(EmbeddingConfig(engine="auto", device="cpu")) == "openvino-int8"
    assert choose_engine(EmbeddingConfig(engine="auto", device="cuda")) == "sentence-transformers"
    monkeypatch.setattr(embedding, "_available", lambda package: package == "onnxruntime")
    assert choose_engine(EmbeddingConfig(engine="auto", device="cpu")) == "onnx-int8"
    monkeypatch.setattr(embedding, "_available", lambda package: False)
    assert choose_engine(EmbeddingConfig(engine="auto", device="cpu")) == "sentence-transformers"


def test_int8_backends_refuse_a_gpu_device():
    with pytest.raises(ConfigError, match="embedding.device"):
        choose_engine(EmbeddingConfig(engine="openvino-int8", device="cuda"))


def test_the_old_key_embedding_backend_still_reads_as_engine():
    """Config files and index manifests written before the rename keep loading."""
    from rag.config import Config

    assert Config.from_dict({"embedding": {"backend": "onnx-int8"}}).embedding.engine == "onnx-int8"
    both = Config.from_dict({"embedding": {"backend": "onnx-int8", "engine": "sentence-transformers"}})
    assert both.embedding.engine == "sentence-transformers"


def test_unknown_engine_names_the_choices():
    with pytest.raises(ConfigError, match="onnx-int8"):
        choose_engine(EmbeddingConfig(engine="tensorrt"))


def test_failed_export_is_a_model_error_and_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WENYUAN_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "tiny-model"
    model.mkdir()

    def broken(model_path, out):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(embedding, "_export", broken)
    with pytest.raises(ModelError, match="sentence-transformers"):
        ensure_onnx_int8(model, "openvino-int8")
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == []


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx-int8", "openvino-int8"])
def test_export_is_cached_and_reused(monkeypatch, backend):
    path = ensure_onnx_int8(_model_folder(), backend)
    mtime = path.stat().st_mtime_ns

    def no_export(model_path, out):
        raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr(embedding, "_export", no_export)
    again = ensure_onnx_int8(_model_folder(), backend)
    assert again == path and again.stat().st_mtime_ns == mtime
    assert path.parent.name.endswith(backend) and (path.parent / "export.json").exists()


@pytest.mark.slow
def test_openvino_export_has_int8_weights_and_a_float_embedding_table():
    import onnx

    graph = onnx.load(str(ensure_onnx_int8(_model_folder(), "openvino-int8"))).graph
    assert [n.op_type for n in graph.node].count("DequantizeLinear") == 12 * 6  # q, k, v, out, ffn in, ffn out
    types = {i.name: i.data_type for i in graph.initializer}
    assert sum(t == onnx.TensorProto.INT8 for t in types.values()) >= 72
    assert any(t == onnx.TensorProto.FLOAT and "word_embeddings" in n for n, t in types.items())


@pytest.mark.slow
def test_onnx_export_is_fused_and_quantised():
    import onnx

    path = ensure_onnx_int8(_model_folder())
    ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    assert ops.count("QAttention") == 12  # every layer's attention fused and int8
    assert "DynamicQuantizeMatMul" in ops or "MatMulInteger" in ops
    assert "EmbedLayerNormalization" in ops  # the embedding table stays float in the fused lookup


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "min_cosine"), [("onnx-int8", 0.97), ("openvino-int8", 0.995)])
def test_int8_backends_match_float32_sentence_transformers(backend, min_cosine):
    fast = Embedder(EmbeddingConfig(engine=backend))
    ref = Embedder(EmbeddingConfig(engine="sentence-transformers"))
    assert fast.dimension == ref.dimension == 384
    p_fast, p_ref = fast.embed_passages(PASSAGES), ref.embed_passages(PASSAGES)
    q_fast, q_ref = fast.embed_queries(QUERIES), ref.embed_queries(QUERIES)
    assert p_fast.dtype == np.float32 and np.allclose(np.linalg.norm(p_fast, axis=1), 1.0, atol=1e-4)
    assert np.min(np.sum(p_fast * p_ref, axis=1)) >= min_cosine
    assert np.min(np.sum(q_fast * q_ref, axis=1)) >= min_cosine
    # The same passage wins each query with either backend.
    assert list(np.argmax(q_fast @ p_fast.T, axis=1)) == list(np.argmax(q_ref @ p_ref.T, axis=1)) == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx-int8", "openvino-int8"])
def test_int8_batches_barely_change_vectors(backend):
    fast = Embedder(EmbeddingConfig(engine=backend, batch_size=2))
    together = fast.embed_passages(PASSAGES)
    alone = np.stack([fast.embed_passages([p])[0] for p in PASSAGES])
    # Activations are quantised per batch, so padding partners move a vector only slightly.
    assert np.min(np.sum(together * alone, axis=1)) >= 0.99
