"""The knowledge bases an API server answers from: every KB under the index root, loaded on first use.

All of them share the served RAG's embedder and generator cache (`rag.answering.GeneratorCache`),
so a second KB costs its index only, never a second model. A KB changed through the API
(`rag.api.kb_routes`) is dropped from the cache and loads again from disk on its next use.

Example:
    >>> kbs = KBRegistry(RAG.load_kb("default"), "default", root="index")  # doctest: +SKIP
    >>> kbs.get("notes").ask("问题")  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

from rag.api.deps import ApiError
from rag.errors import RagError

logger = logging.getLogger(__name__)


class KBRegistry:
    """Name -> RAG. ``served`` (the RAG the server was started with) answers as ``served_name``.

    ``root``: the index root whose KBs are served too (None: only ``served``).
    ``served_kbs``: the KBs ``served`` was loaded from, so a change to one of them reloads it
    (None: loaded from elsewhere; a change to the KB of the same name then replaces it by that KB).
    """

    def __init__(self, served, served_name: str = "default", root: str | Path | None = None,
                 served_kbs: Sequence[str] | None = None) -> None:
        self.served_name = served_name
        self.root = Path(root) if root is not None else None
        self.config = served.config
        self.embedder = served.embedder
        self.generators = served.answerer.generators
        self._served = {served_name: (served, list(served_kbs) if served_kbs is not None else None)}
        self._loaded: dict[str, object] = {}
        self._combined: dict[tuple[str, ...], object] = {}
        self._lock = threading.Lock()

    # -- names -------------------------------------------------------------------------------
    def kb_infos(self) -> list:
        """`rag.kb.KBInfo` of every KB under the root ([] without a root)."""
        if self.root is None:
            return []
        from rag import kb

        return kb.list_kbs(self.root)

    def names(self) -> list[str]:
        """Names that answer: the served RAG's and every KB under the root with documents."""
        names = set(self._served) | {i.name for i in self.kb_infos() if i.chunks}
        return sorted(names)

    # -- lookup ------------------------------------------------------------------------------
    def require(self, name: str) -> str:
        """``name`` if it answers (without loading it); else `ApiError` 404 listing the names there are."""
        names = self.names()
        if name not in names:
            raise ApiError(404, f"unknown model (knowledge base) {name!r}; this server has: "
                                f"{', '.join(names) or 'none'} (GET /v1/models lists them)", "model_not_found")
        return name

    def get(self, name: str):
        """The RAG for ``name``, loading it on first use; `ApiError` 404 listing the names there are."""
        with self._lock:
            if name in self._served:
                return self._served[name][0]
            if name in self._loaded:
                return self._loaded[name]
        self.require(name)
        from rag.pipeline import RAG

        with self._lock:  # one load at a time: two first questions do not load the same KB twice
            if name not in self._loaded:
                logger.info("loading knowledge base %s", name)
                self._loaded[name] = RAG.load_kb(name, self.root, config=self.config, embedder=self.embedder,
                                                 generators=self.generators)
            return self._loaded[name]

    def combined(self, names: Sequence[str]):
        """One RAG searching the KBs ``names`` together (the chat UI's choice of knowledge bases).

        One name is `get`; several share the indexes their own RAGs loaded (nothing loads
        twice) and are kept until one of them changes. `ApiError` 400 for none, 404 for an
        unknown name.
        """
        names = sorted(set(names))
        if not names:
            raise ApiError(400, "choose at least one knowledge base", "no_knowledge_base")
        if len(names) == 1:
            return self.get(names[0])
        key = tuple(names)
        with self._lock:
            if key in self._combined:
                return self._combined[key]
        parts = [self.get(name) for name in names]
        from rag.pipeline import RAG

        rag = RAG([index for part in parts for index in part.indexes], self.config, embedder=self.embedder,
                  generators=self.generators)
        with self._lock:
            return self._combined.setdefault(key, rag)

    def changed(self, name: str, deleted: bool = False) -> None:
        """KB ``name`` changed on disk: no RAG still holding its old index answers again."""
        from rag.pipeline import RAG

        with self._lock:
            self._loaded.pop(name, None)
            self._combined.clear()  # any choice may hold it, under its own name or a served one
            for served_name, (rag, kbs) in list(self._served.items()):
                if kbs is None:
                    if served_name == name:  # its name now means the KB on disk
                        del self._served[served_name]
                    continue
                if name not in kbs:
                    continue
                if deleted:
                    del self._served[served_name]
                    continue
                try:
                    fresh = RAG.load_kb(kbs, self.root, config=self.config, embedder=self.embedder,
                                        generators=self.generators)
                except RagError as e:  # e.g. the KB is empty now: stop serving the stale one
                    logger.warning("served knowledge base %s no longer loads (%s); no longer serving it", served_name, e)
                    del self._served[served_name]
                else:
                    self._served[served_name] = (fresh, kbs)
