"""HTML pages (BeautifulSoup): the main text and its headings, without scripts, menus and footers."""
from __future__ import annotations

from pathlib import Path

from rag.readers.base import Block, read_text_file, Sections

_DROP = ("script", "style", "noscript", "nav", "footer", "aside", "form", "template", "svg")
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_TEXT = ("p", "li", "pre", "blockquote", "dd", "dt", "figcaption", "caption")


def read(path: Path) -> list[Block]:
    return blocks_of(read_text_file(path))


def blocks_of(markup: str, out: Sections | None = None) -> list[Block]:
    """Blocks of one HTML document; pass ``out`` to continue another document's sections (EPUB)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup.find_all(_DROP):
        tag.decompose()
    for tag in soup.find_all("header"):  # the site banner goes; an article's own header holds its title
        if tag.find_parent(["main", "article"]) is None:
            tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    out = out if out is not None else Sections()
    for el in root.find_all([*_HEADINGS, *_TEXT, "table"]):
        if el.find_parent(_TEXT) or (el.name != "table" and el.find_parent("table")):
            continue  # read with its enclosing paragraph or table
        if el.name in _HEADINGS:
            out.heading(_HEADINGS[el.name], el.get_text(" ", strip=True))
        elif el.name == "table":
            if el.find_parent("table") is None:
                out.table([[c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])] for tr in el.find_all("tr")])
        else:
            out.paragraph(el.get_text(" ", strip=True))
    if not out.blocks and not out._paras:  # a page of bare text without block tags
        out.paragraph(root.get_text("\n", strip=True))
    return out.done()
