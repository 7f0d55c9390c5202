"""The "我的文档" panel: the user's knowledge base as a table, uploads with per-file progress, removal with a confirmation.

Callbacks only call `ui.uploads.UserDocuments`; everything shown from a file name is escaped.
Removal takes two clicks: "移除" asks "确认移除 X？" and names the file it will remove
(kept in session state, so changing the dropdown afterwards cannot change the target);
"确认移除" removes it, "取消" drops the question.

Example:
    >>> with gr.Blocks() as demo:  # doctest: +SKIP
    ...     build_docs_panel(demo, UserDocuments(rag, "index/user"))
"""
from __future__ import annotations

import datetime as _dt
import html
import logging

import gradio as gr

from rag.corpus import SUPPORTED_SUFFIXES
from rag.errors import RagError
from ui.uploads import MAX_FILE_BYTES, MAX_FILES, UserDocuments

logger = logging.getLogger(__name__)

EVENT = dict(concurrency_limit=1, concurrency_id="rag", api_visibility="private")  # shares the answers' slot


def build_docs_panel(demo: gr.Blocks, user_docs: UserDocuments) -> None:
    """Add the panel's components (inside the current layout block) and wire their events."""
    gr.Markdown(
        f"上传 {'、'.join(SUPPORTED_SUFFIXES)} 文件（每个不超过 {MAX_FILE_BYTES // 1_000_000} MB，"
        f"共不超过 {MAX_FILES} 个）。它们与默认资料一起被检索，也可以随时移除。扫描版 PDF 需要 OCR 识别，较慢。"
    )
    files = gr.File(
        label="选择文件", file_count="multiple", file_types=list(SUPPORTED_SUFFIXES),
        type="filepath", elem_id="wy-upload",
    )
    add = gr.Button("添加到索引", elem_id="wy-add")
    status = gr.HTML("", elem_id="wy-upload-status")
    file_list = gr.HTML(files_html(user_docs), elem_id="wy-file-list")
    with gr.Row():
        to_remove = gr.Dropdown(
            file_names(user_docs), value=None, label="选择要移除的文件", scale=3, elem_id="wy-remove-choice",
        )
        remove = gr.Button("移除", variant="stop", scale=1, min_width=72, elem_id="wy-remove")
    pending = gr.State(None)  # the file the open confirmation is about
    with gr.Column(visible=False, elem_id="wy-remove-confirm-box") as confirm_box:
        prompt = gr.HTML("", elem_id="wy-remove-prompt")
        with gr.Row():
            confirm = gr.Button("确认移除", variant="stop", size="sm", elem_id="wy-remove-confirm")
            cancel = gr.Button("取消", size="sm", elem_id="wy-remove-cancel")

    def add_files(paths: list[str] | None, progress=gr.Progress()):
        try:
            summary = user_docs.add(paths or [], lambda fraction, desc: progress(fraction, desc=desc))
        except RagError as e:
            logger.info("upload refused: %s", e)
            return _status("未添加", str(e), ok=False), gr.skip(), files_html(user_docs), remove_choices(user_docs)
        return _status("完成", summary), None, files_html(user_docs), remove_choices(user_docs)

    def ask_remove(name: str | None):
        if not name:
            return _status("未移除", "请先选择要移除的文件（在上方的下拉框中）。", ok=False), None, gr.Column(visible=False), ""
        question = f'<div class="wy-confirm">确认移除 <b>{html.escape(name)}</b>？移除后它不再被检索，需要时可重新上传。</div>'
        return "", name, gr.Column(visible=True), question

    def do_remove(name: str | None):
        try:
            summary = user_docs.remove(name)
        except RagError as e:
            text = _status("未移除", str(e), ok=False)
        else:
            text = _status("完成", summary)
        return text, None, gr.Column(visible=False), files_html(user_docs), remove_choices(user_docs)

    add.click(add_files, [files], [status, files, file_list, to_remove], **EVENT)
    remove.click(ask_remove, [to_remove], [status, pending, confirm_box, prompt], queue=False, api_visibility="private")
    confirm.click(do_remove, [pending], [status, pending, confirm_box, file_list, to_remove], **EVENT)
    cancel.click(lambda: (None, gr.Column(visible=False)), None, [pending, confirm_box], queue=False,
                 api_visibility="private")
    # Fresh list on every page load: another tab may have added or removed files.
    demo.load(lambda: (files_html(user_docs), remove_choices(user_docs)), None, [file_list, to_remove],
              api_visibility="private", queue=False)


def files_html(user_docs: UserDocuments) -> str:
    """The uploaded files as a table: name, pages, passages (chunks) and time added."""
    try:
        listed = user_docs.listing()
    except (RagError, OSError) as e:  # e.g. read while an upload swaps the KB folder
        return f'<div class="wy-error">无法读取我的文档：{html.escape(str(e))}。请刷新页面重试。</div>'
    if not listed:
        return '<div class="wy-empty">还没有上传文档。</div>'
    rows = "".join(
        f'<tr><td class="wy-kb-name">{html.escape(f.name)}</td><td>{f.pages or "—"}</td>'
        f"<td>{f.chunks}</td><td>{html.escape(_local_time(f.added))}</td></tr>"
        for f in listed
    )
    total = sum(f.chunks for f in listed)
    return (
        f'<div class="wy-src-meta">我的文档：{len(listed)} 个文件，{total} 个段落</div>'
        '<table class="wy-kb-table"><thead><tr><th>文件</th><th>页数</th><th>段落</th><th>添加时间</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def file_names(user_docs: UserDocuments) -> list[str]:
    return [p.name for p in user_docs.files()]


def remove_choices(user_docs: UserDocuments):
    return gr.Dropdown(choices=file_names(user_docs), value=None)


def _status(label: str, text: str, ok: bool = True) -> str:
    return f'<div class="{"wy-ok" if ok else "wy-error"}"><b>{label}：</b>{html.escape(text)}</div>'


def _local_time(iso: str) -> str:
    """``2026-05-01T08:30:00+00:00`` as the server's local time, to the minute ("" stays "—")."""
    try:
        return _dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return "—"
