"""``rag serve``: start the web UI.

The command lives with the UI, at the edge: ``rag`` finds it through the
``wenyuan.commands`` entry point (pyproject.toml) only when it is run, so the
library never imports ``ui`` or gradio.

Examples:
    rag serve                                  # http://127.0.0.1:7860
    rag serve --port 8080 --backend extractive # no generator model, instant answers
    rag serve --index-dir index/mine --data-dir ~/wenyuan-uploads
"""
from __future__ import annotations

import logging
import time

import click

from rag.config import default_index_dir, load_config

logger = logging.getLogger(__name__)


@click.command()
@click.option("--index-dir", default=None, help="Index folder (default: index/default).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; 0.0.0.0 exposes the app to the network.")
@click.option("--port", type=int, default=7860, show_default=True)
@click.option("--data-dir", default=None, help="Folder for uploaded documents and their index (default: index/user).")
@click.option("--backend", type=click.Choice(["causal", "seq2seq", "extractive"]), default=None, help="Default generator (default: from the config).")
@click.option("--config", "config_path", default=None, help="TOML config file.")
def serve(index_dir: str | None, host: str, port: int, data_dir: str | None, backend: str | None, config_path: str | None) -> None:
    """Serve the chat UI; the index and models load once, before the first page."""
    try:
        from ui.app import build_app, launch_app
    except ImportError as e:
        raise click.ClickException(f"the web UI needs gradio: pip install -e '.[ui]' ({e})") from e
    from rag.pipeline import RAG

    started = time.perf_counter()
    config = load_config(config_path) if config_path else None
    rag = RAG.load(index_dir or default_index_dir(), config=config)
    backend = backend or rag.config.generation.backend
    click.echo(f"index loaded ({time.perf_counter() - started:.1f}s); loading the {backend} generator…")
    rag.answerer.generator(backend)  # load now, not on the first question
    rag.retrieve("问源", top_k=1)  # warms the tokenizer dictionaries and the embedder
    demo = build_app(rag, data_dir=data_dir, default_backend=backend)
    restored = demo.user_documents.restore()
    if restored:
        click.echo(f"searching {restored} uploaded files from {demo.user_documents.files_dir}")
    launch_app(demo, host=host, port=port, prevent_thread_lock=True, quiet=True)
    click.echo(f"问源 ready at http://{host}:{port} ({time.perf_counter() - started:.1f}s after start); Ctrl+C stops it")
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
