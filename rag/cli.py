"""The `rag` command line: thin wrappers over the library.

Examples:
    rag index build                       # default corpus -> index/default
    rag index build docs/ --index-dir index/mine
    rag search "腾讯基金会计划出资多少？" --top-k 5
    rag models provision                  # build the offline model folders once
"""
from __future__ import annotations

import json
import logging
import sys
import time

import click

from rag.cli_kb import index_root_option, kb_group, kb_option, load_rag
from rag.config import Config, default_corpus, default_index_dir, load_config
from rag.errors import RagError
from rag.records import describe_location

logger = logging.getLogger(__name__)


# Commands that live outside the library (the web UI's `serve`) register under
# this entry-point group and are imported only when run: `rag` never imports `ui`.
COMMAND_ENTRY_POINTS = "wenyuan.commands"


class RagGroup(click.Group):
    """Turns library errors into clean CLI messages (the only place that does).

    Also lists and runs the commands registered under :data:`COMMAND_ENTRY_POINTS`.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_plugin_commands()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in _plugin_commands():
            try:
                command = _plugin_commands()[name].load()
            except ImportError as e:
                raise click.ClickException(f"`rag {name}` needs a package that is not installed: {e}. "
                                           "Install the extra it belongs to, e.g. pip install -e '.[ui]'") from e
        return command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RagError as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=RagGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """问源 Wenyuan: cited answers from your Chinese documents."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.group()
def index() -> None:
    """Build and inspect indexes."""


@index.command("build")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--index-dir", default=None, help="Index folder (default: index/default).")
@click.option("--config", "config_path", default=None, help="TOML config file.")
@click.option("--force", is_flag=True, help="Rebuild even if the corpus is unchanged.")
@click.option("--chunk-size", type=int, default=None, help="Chunk budget in characters.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: read, chunk and embed as Ray Data jobs (pip install -e '.[ray]').")
@click.option("--ray-address", default=None, help="Ray cluster to join, HOST:PORT of its head (default: start a local one).")
def index_build(paths: tuple[str, ...], index_dir: str | None, config_path: str | None, force: bool, chunk_size: int | None,
                engine: str, ray_address: str | None) -> None:
    """Index documents (default: the bundled corpus) into INDEX_DIR.

    Example: rag index build --engine ray --ray-address head:6379   (the address `ray start --head` printed)
    """
    from rag.pipeline import RAG

    config = load_config(config_path).with_overrides(chunking={"max_chars": chunk_size})
    started = time.perf_counter()
    sources = list(paths) or [str(default_corpus())]
    if engine == "ray":
        from rag.engine_ray import build_index_ray

        built = build_index_ray(sources, index_dir or default_index_dir(), config, address=ray_address, force=force)
    else:
        built = RAG.build(sources, index_dir=index_dir or default_index_dir(), config=config, force=force).indexes[0]
    counts = built.manifest["counts"]
    click.echo(
        f"index ready at {index_dir or default_index_dir()}: {counts['documents']} documents, "
        f"{counts['chunks']} chunks, {counts['aliases']} duplicate ids folded ({time.perf_counter() - started:.1f}s)"
    )


@index.command("info")
@click.option("--index-dir", default=None, help="Index folder (default: index/default).")
def index_info(index_dir: str | None) -> None:
    """Print an index's manifest."""
    from rag.index import Index

    idx = Index.load(index_dir or default_index_dir())
    click.echo(json.dumps({k: v for k, v in idx.manifest.items() if k != "config"}, ensure_ascii=False, indent=2))


@cli.command()
@click.argument("question")
@click.option("--index-dir", default=None, help="Index folder (default: index/default).")
@kb_option
@index_root_option
@click.option("--top-k", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def search(question: str, index_dir: str | None, kbs: tuple[str, ...], index_root: str | None, top_k: int, as_json: bool) -> None:
    """Retrieve the passages that best match QUESTION."""
    from rag.questions import clean_question

    rag = load_rag(index_dir, kbs, index_root)
    passages = rag.retrieve(clean_question(question), top_k=top_k)
    if as_json:
        rows = [
            {"rank": i + 1, "doc_id": p.doc_id, "chunk_id": p.chunk_id, "title": p.title, "score": p.score,
             "dense_score": p.dense_score, "lexical_score": p.lexical_score, "text": p.text, "location": p.location}
            for i, p in enumerate(passages)
        ]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for i, p in enumerate(passages, start=1):
        where = describe_location(p.location)
        click.echo(f"[{i}] {p.doc_id} 《{p.title}》{' ' + where if where else ''} score={p.score:.4f}")
        click.echo(f"    {p.text}")


@cli.command()
@click.argument("question")
@click.option("--index-dir", default=None, help="Index folder (default: index/default).")
@kb_option
@index_root_option
@click.option("--top-k", type=int, default=None, help="Passages to retrieve (default: from the config).")
@click.option("--generator", "backend", type=click.Choice(["causal", "seq2seq", "extractive"]), default=None, help="Answer backend.")
@click.option("--model", default=None, help="Generator model id or local folder.")
@click.option("--config", "config_path", default=None, help="TOML config file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ask(question: str, index_dir: str | None, kbs: tuple[str, ...], index_root: str | None, top_k: int | None,
        backend: str | None, model: str | None, config_path: str | None, as_json: bool) -> None:
    """Answer QUESTION from the documents, with verified citations.

    Example: rag ask "腾讯基金会计划出资多少？" --generator extractive
    """
    import dataclasses

    config = load_config(config_path) if config_path else None
    rag = load_rag(index_dir, kbs, index_root, config=config)
    if model:
        field = "seq2seq_model" if backend == "seq2seq" else "model"
        setattr(rag.config.generation, field, model)
    answer = rag.ask(question, top_k=top_k, backend=backend)
    if as_json:
        data = dataclasses.asdict(answer)
        for p in data["passages"]:
            p["chunk"].pop("context", None)
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    click.echo(answer.text)
    if answer.notice:
        click.echo(f"注意：{answer.notice}", err=True)
    if answer.refused:
        click.echo("\n最接近的资料（不足以支持回答）：")
        for i, p in enumerate(answer.passages[:3], start=1):
            click.echo(f"  [{i}] {p.doc_id} 《{p.title}》 {p.text[:80]}…")
        return
    click.echo("\n来源：")
    for c in answer.citations:
        p = answer.passages[c.marker - 1]
        click.echo(f"  [{c.marker}] {p.doc_id} 《{p.title}》 “{c.quote}”")
    click.echo(f"\n({answer.backend}, {answer.timings.get('total_ms', 0) / 1000:.1f}s)", err=True)


@cli.group()
def models() -> None:
    """Provision the offline models."""


@models.command("provision")
@click.option("--generator/--no-generator", default=True, help="Also assemble the generator.")
@click.option("--model", "generator_model", default=None,
              help="Generator to assemble (default: Qwen/Qwen2.5-Coder-0.5B-Instruct, the default generation.model); "
                   "also Qwen/Qwen2.5-Coder-1.5B-Instruct (more accurate, about twice the time per answer).")
def models_provision(generator: bool, generator_model: str | None) -> None:
    """Build the embedding (and generator) model folders in the cache, once.

    Example: rag models provision --model Qwen/Qwen2.5-Coder-1.5B-Instruct, then set
    generation.model to that id in a TOML config.
    """
    from rag.config import DEFAULT_GENERATOR_MODEL
    from rag.provision.e5 import ensure_e5_model
    from rag.provision.gguf import ensure_generator_model, known_model

    name = generator_model or DEFAULT_GENERATOR_MODEL
    spec = known_model(name)  # an unknown name fails here, before any work
    click.echo(f"embedding model: {ensure_e5_model()}")
    from rag.embedding import Embedder

    embedder = Embedder(Config().embedding)  # exports the fast CPU engine's model once, if "auto" picks one
    click.echo(f"embedding engine: {embedder.engine}")
    from rag.lexical import compile_search

    if compile_search():  # once here, not at the first search of a served index
        click.echo("BM25 search: compiled")
    if generator:
        import importlib.util

        click.echo(f"generator model: {ensure_generator_model(spec.name)}")
        if importlib.util.find_spec("llama_cpp") is not None:  # the opt-in llama.cpp engine: its Q8_0 GGUF
            from rag.generation.llamacpp import gguf_file, q8_copy

            click.echo(f"generator GGUF for llama.cpp: {q8_copy(gguf_file(name))}")
        if importlib.util.find_spec("ctranslate2") is not None:  # "auto" picks CTranslate2 int8
            from rag.provision.ct2 import ensure_ct2_model
            from rag.provision.gguf import resolve_generator_model

            click.echo(f"generator for CTranslate2: {ensure_ct2_model(resolve_generator_model(name), 'int8')}")


from rag.cli_eval import eval_group  # noqa: E402
cli.add_command(eval_group, "eval")
cli.add_command(kb_group, "kb")


@cli.group()
def keys() -> None:
    """API keys for `rag serve` (stored hashed in $WENYUAN_DATA, default ~/.local/share/wenyuan).

    Examples:
        rag keys create --name laptop      # prints the key once
        rag keys list
        rag keys revoke laptop             # by name or id
    """


@keys.command("create")
@click.option("--name", default="", help="A label to recognise the key by.")
def keys_create(name: str) -> None:
    """Create a key and print it (only its hash is stored: copy it now)."""
    from rag.api.keys import KeyStore

    store = KeyStore()
    key, record = store.create(name)
    click.echo(key)
    click.echo(f"created key {record.id} ({name or 'no name'}) in {store.path}; it is shown only this once", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(as_json: bool) -> None:
    """List the stored keys (id, name, start of the key, creation time); never the keys themselves."""
    from rag.api.keys import KeyStore

    records = KeyStore().records()
    if as_json:
        click.echo(json.dumps([{"id": r.id, "name": r.name, "prefix": r.prefix, "created": r.created} for r in records],
                              ensure_ascii=False))
        return
    if not records:
        click.echo("no API keys; create one with `rag keys create --name NAME`")
    for r in records:
        click.echo(f"{r.id}  {r.name or '-':<16} {r.prefix}…  {time.strftime('%Y-%m-%d %H:%M', time.localtime(r.created))}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke the key(s) with this id or name; a running server stops accepting them at once."""
    from rag.api.keys import KeyStore

    for r in KeyStore().revoke(key_id):
        click.echo(f"revoked {r.id} ({r.name or 'no name'})")


@cli.command("mcp")
@click.option("--index-dir", default=None, help="Index folder (default: index/default).")
@kb_option
@index_root_option
@click.option("--config", "config_path", default=None, help="TOML config file.")
def mcp_command(index_dir: str | None, kbs: tuple[str, ...], index_root: str | None, config_path: str | None) -> None:
    """Serve knowledge bases to MCP agents over stdio (tools: search, ask; the KB as a resource).

    Example (an MCP client's server entry):  {"command": "rag", "args": ["mcp", "--kb", "default"]}
    """
    try:
        from rag.api.mcp import build_mcp_server
    except ImportError as e:
        raise click.ClickException(f"`rag mcp` needs the MCP SDK: pip install -e '.[api]' ({e})") from e

    config = load_config(config_path) if config_path else None
    rag = load_rag(index_dir, kbs, index_root, config=config)
    build_mcp_server(rag, kb_name="+".join(kbs) or "default").run("stdio")  # stdout carries the protocol; logs go to stderr


def _plugin_commands() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=COMMAND_ENTRY_POINTS)}


def main() -> None:
    cli(prog_name="rag")


if __name__ == "__main__":
    sys.exit(main())
