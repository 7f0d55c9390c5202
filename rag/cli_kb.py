"""`rag kb`: named knowledge bases (index folders under the index root).

Examples:
    rag kb create notes
    rag kb add notes ~/docs/report.pdf ~/docs/minutes/
    rag kb list
    rag kb docs notes
    rag kb remove notes report            # by doc id, or by the file's path
    rag kb delete notes --yes
    rag ask "问题" --kb notes --kb default  # search several at once
"""
from __future__ import annotations

import click

from rag.config import index_root, load_config

INDEX_ROOT_HELP = "Folder holding the knowledge bases (default: $WENYUAN_INDEX_ROOT or index/)."


def index_root_option(f):
    return click.option("--index-root", default=None, envvar="WENYUAN_INDEX_ROOT", help=INDEX_ROOT_HELP)(f)


def kb_option(f):
    return click.option("--kb", "kbs", multiple=True,
                        help="Knowledge base to search (repeatable: searched together; see `rag kb list`).")(f)


def load_rag(index_dir: str | None, kbs: tuple[str, ...], root: str | None, config=None):
    """The RAG over ``--index-dir`` and/or the ``--kb`` knowledge bases (default: the KB ``default``)."""
    from rag.kb import search_dirs
    from rag.pipeline import RAG

    dirs = ([index_dir] if index_dir else []) + (search_dirs(kbs, root) if kbs else [])
    return RAG.load(*(dirs or [index_root(root) / "default"]), config=config)


@click.group("kb")
def kb_group() -> None:
    """Create, fill and remove knowledge bases (named index folders)."""


@kb_group.command("create")
@click.argument("name")
@index_root_option
def kb_create(name: str, index_root: str | None) -> None:
    """Create the empty knowledge base NAME."""
    from rag import kb

    folder = kb.create(name, index_root)
    click.echo(f"created knowledge base {name} at {folder}; add files with `rag kb add {name} PATHS...`")


@kb_group.command("list")
@index_root_option
def kb_list(index_root: str | None) -> None:
    """List the knowledge bases: name, documents, chunks, last update."""
    from rag import kb
    from rag.config import index_root as root_of

    rows = kb.list_kbs(index_root)
    if not rows:
        click.echo(f"no knowledge bases under {root_of(index_root)}; create one with `rag kb create NAME`")
        return
    click.echo(f"{'name':<20} {'documents':>9} {'chunks':>7}  updated")
    for r in rows:
        click.echo(f"{r.name:<20} {r.documents:>9} {r.chunks:>7}  {r.updated}")


@kb_group.command("docs")
@click.argument("name")
@index_root_option
def kb_docs(name: str, index_root: str | None) -> None:
    """List the documents of NAME: doc id, source path, title, chunks."""
    from rag import kb

    rows = kb.documents(name, index_root)
    if not rows:
        click.echo(f"knowledge base {name} has no documents; add some with `rag kb add {name} PATHS...`")
    for r in rows:
        click.echo(f"{r.doc_id}\t{r.source}\t{r.title}\t{r.chunks} chunks")


@kb_group.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@index_root_option
@click.option("--config", "config_path", default=None, help="TOML config file.")
def kb_add(name: str, paths: tuple[str, ...], index_root: str | None, config_path: str | None) -> None:
    """Add files or folders to NAME (a changed file replaces its previous version)."""
    from rag import kb

    config = load_config(config_path) if config_path else None
    for ch in kb.add(name, paths, config=config, root=index_root):
        if ch.status == "unchanged":
            click.echo(f"unchanged  {ch.path} ({ch.documents} documents)")
        else:
            click.echo(f"{ch.status:<10} {ch.path} ({ch.documents} documents, {ch.chunks} chunks, {ch.embedded} embedded)")


@kb_group.command("remove")
@click.argument("name")
@click.argument("targets", nargs=-1, required=True)
@index_root_option
def kb_remove(name: str, targets: tuple[str, ...], index_root: str | None) -> None:
    """Remove documents from NAME, by doc id or by source path."""
    from rag import kb

    gone = kb.remove(name, targets, index_root)
    click.echo(f"removed {len(gone)} documents from {name}: {', '.join(gone)}")


@kb_group.command("delete")
@click.argument("name")
@index_root_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def kb_delete(name: str, index_root: str | None, yes: bool) -> None:
    """Delete the knowledge base NAME and its index folder."""
    from rag import kb

    folder = kb.require(name, index_root)
    if not yes:
        click.confirm(f"delete knowledge base {name} ({folder})?", abort=True)
    kb.delete(name, index_root)
    click.echo(f"deleted knowledge base {name}")
