"""HTML for the chat UI, built from `Answer` records.

Every string that comes from a document, a model or a user goes through
:func:`text_html` (or ``html.escape``) before it is put into HTML, so a
document holding ``<script>`` shows the literal text and never runs.
"""
from __future__ import annotations

import html
import re
from typing import Iterable, Sequence

from rag.records import Answer, Citation, Passage, describe_location

_MARKER = re.compile(r"\[(\d{1,2})\]")
# Characters with a meaning in Markdown; the chat panel renders Markdown, so
# they are backslash-escaped to show as themselves (< > & are left to html.escape).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")

TIMING_LABELS = {
    "rewrite_ms": "改写",
    "retrieve_ms": "检索",
    "first_token_ms": "首字",
    "generate_ms": "生成",
    "verify_ms": "核验",
    "total_ms": "总计",
}


def text_html(text: str) -> str:
    """Escape ``text`` for HTML that the chat panel also reads as Markdown."""
    return html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", text), quote=True)


def source_anchor(marker: int) -> str:
    return f"wy-src-{marker}"


def link_markers(text: str, known: Iterable[int] | None = None) -> str:
    """Escape ``text`` and turn ``[n]`` markers into links to the sources panel.

    Markers not in ``known`` (when given) stay plain text: only verified
    citations get a link.
    """
    allowed = set(known) if known is not None else None
    out: list[str] = []
    last = 0
    for m in _MARKER.finditer(text):
        marker = int(m.group(1))
        if allowed is not None and marker not in allowed:
            continue
        out.append(text_html(text[last : m.start()]))
        out.append(
            f'<a class="wy-cite" href="#{source_anchor(marker)}" data-src="{source_anchor(marker)}" '
            f'title="查看来源 {marker}">[{marker}]</a>'
        )
        last = m.end()
    out.append(text_html(text[last:]))
    return "".join(out)


def answer_message(answer: Answer) -> str:
    """The final assistant message for the chat panel (HTML inside Markdown).

    Wrapped in ``.wy-answer`` so a finished answer can be told from one still streaming.
    """
    parts: list[str] = []
    if answer.refused:
        parts.append(f'<span class="wy-refused-tag">无法回答</span> {text_html(answer.text)}')
        parts.append('<br><span class="wy-hint">资料中没有找到能支持回答的内容；最接近的段落列在右侧“来源”中，仅供参考。</span>')
    else:
        parts.append(link_markers(answer.text, {c.marker for c in answer.citations}))
    if answer.notice:  # set only when this answer's backend fell back to extractive
        parts.append(f'<br><span class="wy-notice-inline"><b>注意：</b>{text_html(answer.notice)}</span>')
    return f'<div class="wy-answer">{"".join(parts)}</div>'


def error_message(message: str) -> str:
    """A library error shown in place of an answer."""
    return f'<div class="wy-answer wy-error"><b>出错：</b>{text_html(message)}</div>'


def merge_spans(spans: Iterable[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Clip spans to ``[0, length]``, drop empty ones, merge overlaps, sort."""
    clipped = sorted((max(0, s), min(length, e)) for s, e in spans if min(length, e) > max(0, s))
    merged: list[tuple[int, int]] = []
    for start, end in clipped:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def highlight(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """Escape ``text`` and wrap each ``text[start:end]`` span in ``<mark>``."""
    out: list[str] = []
    last = 0
    for start, end in merge_spans(spans, len(text)):
        out.append(html.escape(text[last:start]))
        out.append(f"<mark>{html.escape(text[start:end])}</mark>")
        last = end
    out.append(html.escape(text[last:]))
    return "".join(out)


def _where(passage: Passage) -> str:
    """`` · 第2页 · 二、预算安排`` for a located passage, "" otherwise."""
    label = describe_location(passage.location)
    return f' · <span class="wy-where">{html.escape(label)}</span>' if label else ""


def _card(marker: int, passage: Passage, spans: Sequence[tuple[int, int]], supporting: bool) -> str:
    badge = "" if supporting else ' · <span class="wy-badge">不支持回答</span>'
    classes = "wy-src" if supporting else "wy-src wy-nosupport"
    anchor = f' id="{source_anchor(marker)}"' if supporting else ""
    title = html.escape(passage.title or "（无标题）")
    return (
        f'<div class="{classes}"{anchor}>'
        f'<div class="wy-src-head"><span class="wy-marker">[{marker}]</span> '
        f'<span class="wy-title">{title}</span></div>'
        f'<div class="wy-src-meta">文档 <code>{html.escape(passage.doc_id)}</code> · 段落 '
        f"<code>{html.escape(passage.chunk_id)}</code>{_where(passage)}{badge}</div>"
        f'<p class="wy-src-text">{highlight(passage.text, spans)}</p></div>'
    )


def sources_html(answer: Answer | None, closest: int = 3) -> str:
    """The sources panel: cited passages with quotes marked, or the closest ones for a refusal."""
    if answer is None:
        return '<div class="wy-empty">提问后，这里会列出回答引用的原文段落。</div>'
    if answer.refused or not answer.citations:
        cards = [_card(i, p, (), supporting=False) for i, p in enumerate(answer.passages[:closest], start=1)]
        head = '<div class="wy-refused">这个问题无法根据现有资料回答。以下是最接近的段落，<strong>它们不足以支持回答</strong>。</div>'
        if not cards:
            return head + '<div class="wy-empty">没有检索到相关段落。</div>'
        return head + "".join(cards)
    by_marker: dict[int, list[Citation]] = {}
    for c in answer.citations:
        by_marker.setdefault(c.marker, []).append(c)
    cards = []
    for marker in sorted(by_marker):
        if not 1 <= marker <= len(answer.passages):
            continue
        spans = [(c.start, c.end) for c in by_marker[marker]]
        cards.append(_card(marker, answer.passages[marker - 1], spans, supporting=True))
    return '<div class="wy-sources">' + "".join(cards) + "</div>"


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def passages_html(answer: Answer | None, show_scores: bool = True) -> str:
    """All retrieved passages (with scores when asked) and the answer's stage timings."""
    if answer is None:
        return '<div class="wy-empty">尚无检索结果。</div>'
    cited = {c.marker for c in answer.citations}
    rows = []
    for rank, p in enumerate(answer.passages, start=1):
        tag = ' <span class="wy-cited">已引用</span>' if rank in cited else ""
        scores = (
            f'<div class="wy-scores">融合 {_score(p.score)} · 向量 {_score(p.dense_score)} · 词项 {_score(p.lexical_score)}</div>'
            if show_scores
            else ""
        )
        rows.append(
            f'<div class="wy-passage"><div class="wy-src-head"><span class="wy-marker">[{rank}]</span> '
            f'<span class="wy-title">{html.escape(p.title or "（无标题）")}</span>{tag}</div>'
            f'<div class="wy-src-meta">文档 <code>{html.escape(p.doc_id)}</code> · 段落 <code>{html.escape(p.chunk_id)}</code>{_where(p)}</div>'
            f'{scores}<p class="wy-src-text">{html.escape(p.text)}</p></div>'
        )
    extra = ""
    if answer.standalone_question and answer.standalone_question != answer.question:
        extra = f'<div class="wy-src-meta">检索用的完整问题：{html.escape(answer.standalone_question)}</div>'
    body = "".join(rows) or '<div class="wy-empty">没有检索到段落。</div>'
    return f"{timings_html(answer)}{extra}{body}"


def timings_html(answer: Answer) -> str:
    items = [f"{label} {answer.timings[key]:.0f} ms" for key, label in TIMING_LABELS.items() if key in answer.timings]
    if "evidence" in answer.timings:
        items.append(f"问题覆盖 {answer.timings['evidence']:.2f}")
    backend = f"生成方式 {html.escape(answer.backend)} · " if answer.backend else ""
    return f'<div class="wy-timings">{backend}{" · ".join(items)}</div>'


def answer_payload(answer: Answer) -> dict:
    """JSON-able form of an answer, returned by the ``ask`` API endpoint."""
    return {
        "question": answer.question,
        "answer": answer.text,
        "refused": answer.refused,
        "citations": [
            {"marker": c.marker, "doc_id": c.doc_id, "chunk_id": c.chunk_id, "quote": c.quote, "start": c.start, "end": c.end,
             "location": c.location}
            for c in answer.citations
        ],
        "passages": [
            {"doc_id": p.doc_id, "chunk_id": p.chunk_id, "title": p.title, "text": p.text, "score": p.score,
             "dense_score": p.dense_score, "lexical_score": p.lexical_score, "location": p.location}
            for p in answer.passages
        ],
        "backend": answer.backend,
        "notice": answer.notice,
        "timings": dict(answer.timings),
        "standalone_question": answer.standalone_question,
    }
