"""The Gradio chat app: `build_app(rag)` returns a `gr.Blocks`, `launch_app` serves it.

Callbacks only call the library (`RAG.ask_stream`, `RAG.ask`, and
`rag.kb` through `UserDocuments` for the uploads, in the panel built by
`ui.kb_panel`) and the HTML renderers in `ui.render`. Chat history lives in each browser session's state, never in
module globals.

Example:
    >>> from rag.pipeline import RAG
    >>> demo = build_app(RAG.load("index/default"), data_dir="index/user")  # doctest: +SKIP
    >>> launch_app(demo, port=7860)  # doctest: +SKIP
"""
from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any, Sequence

import gradio as gr

from rag.config import default_index_dir
from rag.errors import RagError
from rag.records import Answer
from ui.kb_panel import build_docs_panel
from ui.render import answer_message, answer_payload, error_message, passages_html, sources_html, text_html
from ui.theme import CSS, HEAD, theme
from ui.uploads import MAX_FILE_BYTES, UserDocuments

logger = logging.getLogger(__name__)

# Dev-set questions the bundled corpus answers (eval/dev_questions.jsonl).
DEFAULT_EXAMPLES = (
    "北京幸福公益基金会的理事长是谁？",
    "据基金会中心网统计，2018年全国共有多少家基金会关注精神卫生领域？",
    "北京市社会心理工作联合会等发起的“京鄂iWill志愿者联合行动”是哪天凌晨开始行动的？",
)
BACKEND_LABELS = {"causal": "生成式（Qwen，较慢）", "seq2seq": "生成式（seq2seq）", "extractive": "抽取式（即时，不用模型）"}
MAX_TOP_K = 10
# One answer at a time: generation uses both cores of a small machine, and two
# concurrent answers would each take twice as long.
CONCURRENCY = 1


def backends_for(rag) -> list[str]:
    """Generator backends offered in the settings.

    seq2seq needs an encoder-decoder model, so it is offered only when the
    configured generator is one; otherwise picking it would just fall back.
    """
    configured = rag.config.generation.backend
    return ["causal", "seq2seq", "extractive"] if configured == "seq2seq" else ["causal", "extractive"]


def build_app(
    rag,
    data_dir: str | Path | None = None,
    examples: Sequence[str] = DEFAULT_EXAMPLES,
    default_backend: str | None = None,
    default_top_k: int | None = None,
    knowledge_bases=None,
) -> gr.Blocks:
    """Build the chat UI around a loaded `RAG`.

    Args:
        rag: the pipeline; its indexes and models are loaded by the caller, once.
        data_dir: folder for the user's uploads and their knowledge base (default ``index/user``);
            the app writes nothing outside it.
        examples: example questions shown under the chat.
        default_backend, default_top_k: initial settings (default: the rag config).
        knowledge_bases: the knowledge bases a user may choose to search (`ui.server.KBChoices`:
            ``names()``, ``default`` and ``rag(names)``); None: only ``rag``'s, with no chooser.
    """
    backends = backends_for(rag)
    backend0 = default_backend or rag.config.generation.backend
    if backend0 not in backends:
        backends.append(backend0)
    top_k0 = int(default_top_k or rag.config.retrieval.top_k)
    user_docs = UserDocuments(rag, data_dir or default_data_dir())

    def answer_stream(message: str, chat: list, pairs: list, top_k: float, backend: str, show_scores: bool,
                      kbs: list[str] | None = None):
        """Stream one answer into the chat, then render its sources."""
        chat = list(chat or [])
        pairs = list(pairs or [])
        chat.append({"role": "user", "content": text_html(message or "")})
        chat.append({"role": "assistant", "content": '<span class="wy-hint">正在检索资料…</span>'})
        yield chat, "", pairs, gr.skip(), gr.skip(), gr.skip()
        answer: Answer | None = None
        pieces: list[str] = []
        try:
            for item in chosen(kbs).ask_stream(message or "", history=pairs, top_k=int(top_k), backend=backend):
                if isinstance(item, Answer):
                    answer = item
                    break
                pieces.append(item)
                chat[-1] = {"role": "assistant", "content": text_html("".join(pieces)) + "▌"}
                yield chat, "", pairs, gr.skip(), gr.skip(), gr.skip()
        except RagError as e:
            chat[-1] = {"role": "assistant", "content": error_message(str(e))}
            yield chat, "", pairs, gr.skip(), gr.skip(), gr.skip()
            return
        if answer is None:  # the library promises a final Answer; show something sane if not
            chat[-1] = {"role": "assistant", "content": error_message("没有得到回答，请重试。")}
            yield chat, "", pairs, gr.skip(), gr.skip(), gr.skip()
            return
        chat[-1] = {"role": "assistant", "content": answer_message(answer)}
        pairs.append((answer.question, answer.text))
        yield chat, "", pairs, sources_html(answer), passages_html(answer, show_scores), answer

    def chosen(kbs: list[str] | None):
        """The RAG searching the chosen knowledge bases (the served one when there is no choice)."""
        return rag if knowledge_bases is None or kbs is None else knowledge_bases.rag(kbs)

    def ask(question: str, top_k: int = top_k0, backend: str = backend0, kbs: list[str] | None = None) -> dict[str, Any]:
        """Answer one question with cited passages (or a refusal).

        ``kbs``: the knowledge bases to search (default: the served one).
        Returns a dict: answer, refused, citations (marker, doc_id, chunk_id,
        quote, start, end), passages, backend, notice, timings.
        """
        if backend not in backends:
            raise gr.Error(f"未知的生成方式 {backend!r}；可选：{', '.join(backends)}")
        try:
            answer = chosen(kbs).ask(question, top_k=max(1, min(MAX_TOP_K, int(top_k))), backend=backend)
        except RagError as e:
            raise gr.Error(str(e), print_exception=False) from e
        return answer_payload(answer)

    def clear():
        return [], [], sources_html(None), passages_html(None), None, ""

    # delete_cache: Gradio keeps uploads in its temp folder; drop them after an hour.
    with gr.Blocks(title="问源 Wenyuan", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        with gr.Column(elem_id="wy-header"):
            gr.HTML("<h1>问源 Wenyuan</h1><p>基于本地资料的中文问答：每个回答都标注出处，资料里没有的就直说不知道。</p>")
        notice = getattr(getattr(rag, "answerer", None), "notice", "")
        gr.HTML(f'<div class="wy-notice"><b>注意：</b>{html.escape(notice)}</div>', elem_id="wy-notice", visible=bool(notice))
        pairs = gr.State([])
        last_answer = gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                chatbot = gr.Chatbot(
                    label="对话", elem_id="wy-chat", height=520, latex_delimiters=[], feedback_options=None,
                    placeholder="请输入问题，例如：北京幸福公益基金会的理事长是谁？", buttons=["copy"],
                )
                with gr.Row():
                    question = gr.Textbox(
                        placeholder="输入问题，回车发送", show_label=False, scale=5,
                        elem_id="wy-question", max_lines=4, autofocus=True,
                    )
                    send = gr.Button("发送", variant="primary", scale=1, min_width=72, elem_id="wy-send")
                new_chat = gr.Button("新对话（清空记录）", size="sm", elem_id="wy-clear")
                gr.Examples([[q] for q in examples], inputs=[question], label="示例问题")
            with gr.Column(scale=2, min_width=300):
                if knowledge_bases is not None:
                    # Shown once there is a choice to make (more than one KB under the index root).
                    names = knowledge_bases.names()
                    kbs = gr.CheckboxGroup(
                        names, value=list(knowledge_bases.default), label="检索的知识库",
                        info="可多选；我的文档总会一起检索。", elem_id="wy-kbs", visible=len(names) > 1,
                    )
                else:
                    kbs = gr.State(None)
                gr.Markdown("#### 来源")
                sources = gr.HTML(sources_html(None), elem_id="wy-sources")
                with gr.Accordion("检索到的全部段落与用时", open=False, elem_id="wy-passages-box"):
                    passages = gr.HTML(passages_html(None), elem_id="wy-passages")
                with gr.Accordion("设置", open=False, elem_id="wy-settings"):
                    top_k = gr.Slider(1, MAX_TOP_K, value=top_k0, step=1, label="检索段落数（top-k）", elem_id="wy-topk")
                    backend = gr.Radio(
                        [(BACKEND_LABELS.get(b, b), b) for b in backends], value=backend0, label="生成方式", elem_id="wy-backend"
                    )
                    show_scores = gr.Checkbox(True, label="显示检索分数", elem_id="wy-show-scores")
                with gr.Accordion("我的文档", open=False, elem_id="wy-docs"):
                    build_docs_panel(demo, user_docs)

        chat_io = dict(
            fn=answer_stream,
            inputs=[question, chatbot, pairs, top_k, backend, show_scores, kbs],
            outputs=[chatbot, question, pairs, sources, passages, last_answer],
            concurrency_limit=CONCURRENCY, concurrency_id="rag", api_visibility="private",
        )
        question.submit(**chat_io)
        send.click(**chat_io)
        cleared = [chatbot, pairs, sources, passages, last_answer, question]
        new_chat.click(clear, None, cleared, api_visibility="private", queue=False)
        chatbot.clear(clear, None, cleared, api_visibility="private", queue=False)  # the panel's own bin icon
        show_scores.change(
            lambda a, s: passages_html(a, s), [last_answer, show_scores], passages, api_visibility="private", queue=False
        )
        if knowledge_bases is not None:
            # Fresh names on every page load: a KB may have been created or deleted since.
            demo.load(lambda: gr.CheckboxGroup(choices=(names := knowledge_bases.names()), visible=len(names) > 1),
                      None, kbs, api_visibility="private", queue=False)
        gr.api(ask, api_name="ask", concurrency_limit=CONCURRENCY, concurrency_id="rag")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    demo.user_documents = user_docs  # for `rag serve` (restore at start) and tests
    return demo


def launch_app(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, **kwargs: Any):
    """Serve ``demo`` with the app's theme, CSS and upload limit."""
    options: dict[str, Any] = dict(
        server_name=host, server_port=port, css=CSS, head=HEAD, theme=theme(), ssr_mode=False,
        max_file_size=MAX_FILE_BYTES, footer_links=["api"], show_error=False,
    )
    options.update(kwargs)
    return demo.launch(**options)


def default_data_dir() -> Path:
    """``index/user`` beside the default index (gitignored with it)."""
    return default_index_dir().parent / "user"
