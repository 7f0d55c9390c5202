"""One process, one port: the Gradio UI at ``/``, the HTTP API (``rag.api``) under ``/v1`` and MCP at ``/mcp``.

The models and index are loaded once, by the caller, and shared by all. UI
answers take a slot of the API's answer queue (`rag.api.queue.gated`), so
``concurrency`` bounds the answers generating in the whole process.

Example:
    >>> from rag.pipeline import RAG
    >>> app = build_server(RAG.load("index/default"))  # doctest: +SKIP
    >>> serve_app(app, host="127.0.0.1", port=7860)  # doctest: +SKIP
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr
import uvicorn

from rag.api.app import create_app
from rag.api.deps import ApiError
from rag.api.queue import gated
from rag.errors import IndexLoadError, QuestionError
from ui.app import build_app
from ui.theme import CSS, HEAD, theme
from ui.uploads import MAX_FILE_BYTES

logger = logging.getLogger(__name__)


def build_server(rag, data_dir: str | Path | None = None, default_backend: str | None = None, ui: bool = True,
                 **api_options: Any):
    """The FastAPI app with the API routes and (``ui=True``) the chat UI mounted at ``/``.

    ``api_options`` go to `rag.api.app.create_app` (keys, concurrency, max_queue, rate_limit, cors_origins, host).
    """
    app = create_app(rag, **api_options)
    if ui:
        # The UI's answers wait for the API's answer slots (after the UI's own Gradio queue).
        # Each UI question uses the served KB as the API's registry holds it now: a document
        # added or removed through the API is what the UI searches next.
        served = gated(rag, app.state.api.gate, _current(app.state.api.kbs))
        demo = build_app(served, data_dir=data_dir, default_backend=default_backend,
                         knowledge_bases=KBChoices(served, app.state.api.kbs))
        app.state.demo = demo
        # Routes added before the mount win, so /v1, /healthz and /docs stay the API's.
        app = gr.mount_gradio_app(app, demo, path="/", css=CSS, head=HEAD, theme=theme(), ssr_mode=False,
                                  max_file_size=MAX_FILE_BYTES, footer_links=["api"], show_error=False)
    return app


class KBChoices:
    """The knowledge bases the chat UI offers, and the RAG searching a choice of them.

    ``served`` is the UI's gated RAG (the served KB, with the user's uploads); any other
    choice is a view on it (`rag.api.queue._Gated.choose`) over the registry's combined
    RAG, so every choice searches the uploads too and shares the answer queue.
    """

    def __init__(self, served, registry) -> None:
        self.served = served
        self.registry = registry
        self.default = [registry.served_name]
        self._views: dict[tuple[str, ...], object] = {}

    def names(self) -> list[str]:
        return self.registry.names()

    def rag(self, names) -> object:
        key = tuple(sorted(set(names or ())))
        if not key:
            raise QuestionError("请至少选择一个知识库（在“检索的知识库”中勾选）。")
        if key == (self.registry.served_name,):
            return self.served
        unknown = [n for n in key if n not in self.names()]
        if unknown:
            raise QuestionError(f"没有知识库 {'、'.join(unknown)}（可能已被删除）；请刷新页面后重新选择。")
        if key not in self._views:
            self._views[key] = self.served.choose(lambda: self._combined(key))
        return self._views[key]

    def _combined(self, key: tuple[str, ...]):
        try:
            return self.registry.combined(key)
        except ApiError as e:  # deleted between the check and the question
            raise IndexLoadError(f"无法检索所选知识库：{e.message}；请刷新页面后重新选择") from e


def _current(registry):
    def current():
        try:
            return registry.get(registry.served_name)
        except ApiError as e:  # the served knowledge base was deleted through the API
            raise IndexLoadError(f"这个页面检索的知识库已不存在（{e.message}）；请重新启动 rag serve") from e

    return current


def serve_app(app, host: str = "127.0.0.1", port: int = 7860, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for ``app`` (call ``.run()``, or run it in a thread and set ``should_exit``)."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    return uvicorn.Server(config)
