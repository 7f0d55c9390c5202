"""What a knowledge-base change reuses from the KB's previous version, so it costs only what is new.

- embeddings, by `chunk_key` (the chunk's text and context under one model);
- BM25 tokens, by chunk text, from the tokens saved beside the lexical index.

Whether a file changed at all is its `rag.index.file_sha256` against the one the KB recorded.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from rag.index import Index
from rag.lexical import LexicalIndex, tokenize
from rag.records import Chunk

logger = logging.getLogger(__name__)


def chunk_key(chunk: Chunk, model: str) -> str:
    """Identity of a chunk's embedding: its text and context under one embedding model."""
    return hashlib.sha256("\0".join((model, chunk.context, chunk.text)).encode("utf-8")).hexdigest()


def stored_vectors(manifest: dict, old: Index | None) -> dict[str, np.ndarray]:
    if old is None:
        return {}
    model = manifest.get("embedding", {}).get("model", "")
    return {chunk_key(c, model): np.array(old.vectors[i]) for i, c in enumerate(old.chunks)}


def token_lists(folder: Path, old: Index | None, chunks: list[Chunk]) -> list[list[str]]:
    """BM25 tokens of ``chunks``: those the KB's current version saved for the same text, the rest tokenised.

    A KB written before tokens were saved has none: all its chunks are tokenised once.
    """
    cached: dict[str, list[str]] = {}
    if old is not None:
        saved = LexicalIndex.saved_tokens(folder / "lexical")
        if saved is not None and len(saved) == len(old.chunks):
            cached = {c.text: tokens for c, tokens in zip(old.chunks, saved)}
    fresh = sum(1 for c in chunks if c.text not in cached)
    logger.info("tokenising %d new chunks (%d kept from the previous version)", fresh, len(chunks) - fresh)
    return [cached[c.text] if c.text in cached else tokenize(c.text) for c in chunks]
