"""The `RAG` object: the public entry point tying the stages together."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import threading

from rag.answering import Answerer, GeneratorCache
from rag.build import build_index
from rag.config import Config
from rag.embedding import Embedder
from rag.errors import IndexLoadError
from rag.index import Index
from rag.records import Answer, Passage
from rag.retrieval import Retriever

logger = logging.getLogger(__name__)


class RAG:
    """Retrieval-augmented question answering over one or more indexes.

    Example:
        >>> rag = RAG.build(["data/articles.txt"], index_dir="index/default")
        >>> rag = RAG.load("index/default")
        >>> rag.retrieve("腾讯基金会计划出资多少？", top_k=5)[0].doc_id
    """

    def __init__(self, indexes: Sequence[Index], config: Config | None = None, embedder: Embedder | None = None,
                 generators: GeneratorCache | None = None) -> None:
        """``embedder`` and ``generators`` may be shared with other RAGs (one loaded model for several KBs)."""
        self.config = config or Config()
        self.indexes = list(indexes)
        self.embedder = embedder or Embedder(self.config.embedding)
        for index in self.indexes:
            if index.dimension != self.embedder.dimension:
                raise IndexLoadError(
                    f"the index has {index.dimension}-d vectors but the embedding model {self.config.embedding.model!r} "
                    f"makes {self.embedder.dimension}-d ones; rebuild the index with `rag index build --force`"
                )
        self.retriever = Retriever(self.indexes, self.embedder, self.config.retrieval)
        self.aliases: dict[str, str] = {}  # only folded duplicates' ids: any other id is its own
        for index in self.indexes:
            self.aliases.update(index.aliases())
        self.answerer = Answerer(self.retrieve, self.config.generation, self.config.answer, generators)
        self._lock = threading.Lock()
        self._extra: dict[str, Index] = {}  # indexes searched beside the base ones (search_also), by key

    @classmethod
    def build(
        cls,
        paths: Iterable[str | Path],
        index_dir: str | Path = "index/default",
        config: Config | None = None,
        force: bool = False,
    ) -> "RAG":
        """Build (or reuse, when unchanged) the index for ``paths`` and return a ready RAG."""
        config = config or Config()
        holder: dict[str, Embedder] = {}

        def factory() -> Embedder:
            holder.setdefault("e", Embedder(config.embedding))
            return holder["e"]

        index = build_index(paths, index_dir, config, factory, force=force)
        return cls([index], config, holder.get("e"))

    @classmethod
    def load(cls, *index_dirs: str | Path, config: Config | None = None, embedder: Embedder | None = None,
             generators: GeneratorCache | None = None) -> "RAG":
        """Load one or more index folders (searched together); ``embedder``/``generators``: shared ones to use."""
        config = config or Config()
        indexes = [Index.load(d, embedding_model=config.embedding.model) for d in index_dirs]
        built = indexes[0].manifest.get("config")
        if built and config == Config():
            # Nothing configured by the caller: the settings the index was built with.
            config = config.with_build_settings(built)
        return cls(indexes, config, embedder, generators)

    @classmethod
    def load_kb(cls, names: str | Sequence[str], root: str | Path | None = None, config: Config | None = None,
                embedder: Embedder | None = None, generators: GeneratorCache | None = None) -> "RAG":
        """Load one knowledge base or several (searched together, results merged by score).

        ``root``: the folder holding the KBs (default ``$WENYUAN_INDEX_ROOT`` or ``index/``).
        """
        from rag.kb import search_dirs

        return cls.load(*search_dirs(names, root), config=config, embedder=embedder, generators=generators)

    def resolve_doc_id(self, doc_id: str) -> str:
        """Canonical id for any document id or alias of a folded duplicate."""
        return self.aliases.get(doc_id, doc_id)

    def retrieve(self, question: str, top_k: int | None = None) -> list[Passage]:
        """Top-k passages for a question, best first."""
        return self.retriever.retrieve(question, top_k)

    def retrieve_batch(self, questions: Sequence[str], top_k: int | None = None) -> list[list[Passage]]:
        return self.retriever.retrieve_batch(questions, top_k)

    def ask(self, question: str, history: Sequence = (), top_k: int | None = None, backend: str | None = None) -> Answer:
        """Answer with verified citations, or refuse (``answer.refused``).

        ``history`` holds earlier ``(question, answer)`` pairs or chat messages;
        a follow-up question is rewritten into a standalone one before retrieval.
        """
        return self.answerer.ask(question, history, top_k, backend)

    def ask_stream(self, question: str, history: Sequence = (), top_k: int | None = None, backend: str | None = None) -> Iterator[str | Answer]:
        """Yield answer text pieces as they are generated, then the final `Answer`."""
        return self.answerer.ask_stream(question, history, top_k, backend)

    def search_also(self, key: str, index: Index | None) -> None:
        """Search ``index`` beside the base indexes under ``key`` (replacing what ``key`` held);
        ``None`` stops searching it. The swap is atomic for concurrent questions, and the
        document aliases are rebuilt, so a removed document's ids resolve no more."""
        with self._lock:
            if index is None:
                self._extra.pop(key, None)
            else:
                self._extra[key] = index
            indexes = self.indexes + list(self._extra.values())
            aliases: dict[str, str] = {}
            for ix in indexes:
                aliases.update(ix.aliases())
            self.retriever.indexes = indexes
            self.aliases = aliases
