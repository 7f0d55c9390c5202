"""问源 Wenyuan: retrieval-augmented question answering over Chinese documents."""
from __future__ import annotations

from rag.config import Config
from rag.errors import RagError
from rag.pipeline import RAG
from rag.records import Answer, Chunk, Citation, Document, Passage

__all__ = ["RAG", "Config", "RagError", "Answer", "Chunk", "Citation", "Document", "Passage"]
__version__ = "0.1.0"
