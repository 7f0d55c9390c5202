"""``rag serve``: start the web UI and the HTTP API on one port.

The command lives with the UI, at the edge: ``rag`` finds it through the
``wenyuan.commands`` entry point (pyproject.toml) only when it is run, so the
library never imports ``ui`` or gradio.

Examples:
    rag serve                                  # http://127.0.0.1:7860
    rag serve --port 8080 --backend extractive # no generator model, instant answers
    rag serve --index-dir index/mine --data-dir ~/wenyuan-uploads
    rag serve --kb notes --kb default          # knowledge bases (rag kb list)
    rag serve --host 0.0.0.0 --concurrency 2    # needs an API key: rag keys create
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from rag.cli_kb import index_root_option, kb_option, load_rag
from rag.config import index_root as root_of
from rag.config import load_config
from rag.lexical import compile_search

logger = logging.getLogger(__name__)


@click.command()
@click.option("--index-dir", default=None, help="Index folder (default: index/default).")
@kb_option
@index_root_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any non-loopback address (0.0.0.0) needs an API key (rag keys create).")
@click.option("--port", type=int, default=7860, show_default=True)
@click.option("--data-dir", default=None, help="Folder for uploaded documents and their index (default: index/user).")
@click.option("--backend", type=click.Choice(["causal", "seq2seq", "extractive"]), default=None, help="Default generator (default: from the config).")
@click.option("--config", "config_path", default=None, help="TOML config file.")
@click.option("--concurrency", type=click.IntRange(1), default=1, show_default=True, help="Answers generating at once (UI, API and MCP together).")
@click.option("--max-queue", type=click.IntRange(0), default=16, show_default=True,
              help="API answers waiting for a slot; beyond that, 429 with Retry-After.")
@click.option("--rate-limit", type=click.FloatRange(0), default=0, show_default=True,
              help="API requests per minute per key (0: no limit).")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser calls to the API from this origin (repeatable).")
def serve(index_dir: str | None, kbs: tuple[str, ...], index_root: str | None, host: str, port: int, data_dir: str | None, backend: str | None, config_path: str | None,
          concurrency: int, max_queue: int, rate_limit: float, cors_origins: tuple[str, ...]) -> None:
    """Serve the chat UI at /, the HTTP API under /v1 (OpenAI-compatible; docs at /docs) and MCP at /mcp.

    The index and models load once, before the first page, and are shared by both.
    """
    try:
        from rag.api.keys import KeyStore, check_exposure
        from ui.server import build_server, serve_app
    except ImportError as e:
        raise click.ClickException(f"rag serve needs gradio, fastapi and uvicorn: pip install -e '.[ui,api]' ({e})") from e
    keys = KeyStore()
    check_exposure(host, keys)  # before loading anything: refuse fast
    started = time.perf_counter()
    config = load_config(config_path) if config_path else None
    rag = load_rag(index_dir, kbs, index_root, config=config)  # --kb NAME (repeatable), else the KB "default"
    backend = backend or rag.config.generation.backend
    click.echo(f"index loaded ({time.perf_counter() - started:.1f}s); loading the {backend} generator…")
    rag.answerer.generator(backend)  # load now, not on the first question
    rag.retrieve("问源", top_k=1)  # warms the tokenizer dictionaries and the embedder
    compile_search()  # the compiled BM25 search: from numba's cache, or compiled once now, not at a first question
    # The API serves every KB under the index root too; this RAG answers as its own name.
    served_kbs = None if index_dir else (list(kbs) or ["default"])
    kb_name = "+".join([Path(index_dir).name, *kbs] if index_dir else served_kbs)
    app = build_server(rag, data_dir=data_dir, default_backend=backend, keys=keys, concurrency=concurrency,
                       max_queue=max_queue, rate_limit=rate_limit, cors_origins=cors_origins, host=host,
                       kb_name=kb_name, index_root=root_of(index_root), served_kbs=served_kbs)
    restored = app.state.demo.user_documents.restore()
    if restored:
        click.echo(f"searching {restored} uploaded files from {app.state.demo.user_documents.files_dir}")
    access = "API keys required" if keys.has_keys() else "no API key configured: /v1 and /mcp are open to this machine"
    click.echo(f"问源 ready at http://{host}:{port} (API: /v1, docs: /docs, MCP: /mcp; {access}; "
               f"{time.perf_counter() - started:.1f}s after start); Ctrl+C stops it")
    serve_app(app, host=host, port=port).run()
