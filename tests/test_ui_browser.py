"""End-to-end UI tests in a real Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The app runs in-process on a free port over the real default index. To keep CI
fast it starts with the extractive backend; one test switches the settings to
the default causal model. Screenshots go to tests/artifacts/ (gitignored).
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

pytest.importorskip("gradio")
playwright_api = pytest.importorskip("playwright.sync_api")


pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
ANSWER_TIMEOUT_MS = 90_000
XSS_DOC = (
    "问源测试公司的吉祥物名叫小蓝鲸。"
    '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'
    "小蓝鲸住在青岛的海边。\n"
)


def _dev_question(qid: str) -> dict:
    with open(ROOT / "eval" / "dev_questions.jsonl", encoding="utf-8") as f:
        return next(q for q in map(json.loads, f) if q["id"] == qid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, default_rag):
    from ui.app import build_app, launch_app

    rag = default_rag
    demo = build_app(rag, data_dir=tmp_path_factory.mktemp("user"), default_backend="extractive")
    port = _free_port()
    launch_app(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium fonts-noto-cjk")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport=LAPTOP, locale="zh-CN")
    page = context.new_page()
    page.goto(app_url)
    page.locator("#wy-question textarea").wait_for(timeout=30_000)
    yield page
    context.close()


def _ask(page, question: str) -> None:
    """Ask and wait until the answer is complete (a finished answer is wrapped in .wy-answer)."""
    done = page.locator("#wy-chat .wy-answer").count()
    page.locator("#wy-question textarea").fill(question)
    page.locator("#wy-question textarea").press("Enter")
    page.wait_for_function(
        f"document.querySelectorAll('#wy-chat .wy-answer').length > {done}", timeout=ANSWER_TIMEOUT_MS
    )


def _last_bot_text(page) -> str:
    return page.locator("#wy-chat .wy-answer").last.inner_text()


def _check_cited_answer(page, expected: list[str]) -> None:
    answer = _last_bot_text(page)
    assert any(a in answer for a in expected), answer
    marker = page.locator("#wy-chat a.wy-cite").first
    number = marker.inner_text().strip("[]")
    card = page.locator(f"#wy-src-{number}")
    assert card.is_visible()
    quote = card.locator("mark").first.inner_text()
    assert quote and quote in card.locator(".wy-src-text").inner_text()
    assert any(a in quote for a in expected) or any(a in answer for a in expected)


def _screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_answer_with_citation_laptop_and_phone(page) -> None:
    q = _dev_question("q0002")
    _ask(page, q["question"])
    _check_cited_answer(page, q["answers"])
    page.locator("#wy-chat a.wy-cite").first.click()  # the marker links to its source card
    page.locator("#wy-src-1.wy-flash, .wy-src.wy-flash").first.wait_for(timeout=5_000)
    page.locator("#wy-passages-box").get_by_text("检索到的全部段落与用时").click()
    page.locator("#wy-passages .wy-timings").wait_for()
    assert "融合" in page.locator("#wy-passages").inner_text()
    _screenshot(page, "ui-answer-laptop.png")
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(500)
    _screenshot(page, "ui-answer-phone.png")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"page scrolls sideways on a phone ({width}px)"


def test_follow_up_uses_history_and_new_chat_clears(page) -> None:
    q = _dev_question("q0002")
    _ask(page, q["question"])
    _ask(page, "该基金会和哪所大学的心理学系共同发起了在线培训？")
    assert "清华大学" in _last_bot_text(page)
    page.locator("#wy-passages-box").get_by_text("检索到的全部段落与用时").click()
    assert "北京幸福公益基金会和哪所大学" in page.locator("#wy-passages").inner_text()  # the rewritten question
    page.locator("#wy-clear").click()
    page.wait_for_function("!document.querySelector('#wy-chat .wy-answer')", timeout=10_000)
    assert "提问后" in page.locator("#wy-sources").inner_text()
    _ask(page, "该基金会和哪所大学的心理学系共同发起了在线培训？")  # no history now: nothing to rewrite
    assert "北京幸福公益基金会和哪所大学" not in page.locator("#wy-passages").inner_text()


def test_refused_question_shows_closest_passages(page) -> None:
    q = _dev_question("q0195")
    assert q["type"] == "unanswerable"
    _ask(page, q["question"])
    page.locator("#wy-sources .wy-refused").wait_for()
    assert "无法回答" in page.locator("#wy-chat").inner_text()
    assert page.locator("#wy-sources .wy-nosupport").count() >= 1
    assert "不支持回答" in page.locator("#wy-sources").inner_text()
    _screenshot(page, "ui-refused.png")


def test_uploaded_xss_document_is_shown_as_text(page, tmp_path) -> None:
    doc = tmp_path / "../吉祥物 说明.txt"  # the app keeps only a safe basename
    doc.write_text(XSS_DOC, encoding="utf-8")
    page.locator("#wy-docs").get_by_text("我的文档").first.click()
    page.locator("#wy-upload input[type=file]").set_input_files(str(doc))
    page.locator("#wy-add").click()
    page.locator("#wy-upload-status").get_by_text("已添加").wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert "吉祥物_说明.txt" in page.locator("#wy-file-list").inner_text()
    _ask(page, "问源测试公司的吉祥物名叫什么？")
    assert page.evaluate("typeof window.__xss") == "undefined"
    sources = page.locator("#wy-sources").inner_text()
    assert "<script>window.__xss=1</script>" in sources and 'onerror="window.__xss=1"' in sources
    assert "小蓝鲸" in _last_bot_text(page)
    assert page.locator("#wy-sources script, #wy-sources img, #wy-chat img[src=x]").count() == 0
    _screenshot(page, "ui-xss.png")


def test_default_causal_backend(page) -> None:
    q = _dev_question("q0002")
    page.locator("#wy-settings").get_by_text("设置").first.click()
    page.get_by_label("生成式（Qwen，较慢）").check()
    _ask(page, q["question"])
    _check_cited_answer(page, q["answers"])
    page.locator("#wy-passages-box").get_by_text("检索到的全部段落与用时").click()
    assert "生成方式 causal" in page.locator("#wy-passages .wy-timings").inner_text()
    assert page.locator("#wy-chat .wy-notice-inline").count() == 0  # no fallback to extractive
    _screenshot(page, "ui-causal.png")


def test_ask_endpoint_with_gradio_client(app_url) -> None:
    from gradio_client import Client

    q = _dev_question("q0002")
    result = Client(app_url, verbose=False).predict(q["question"], 5, "extractive", api_name="/ask")
    assert not result["refused"] and any(a in result["answer"] for a in q["answers"])
    for c in result["citations"]:
        assert result["passages"][c["marker"] - 1]["text"][c["start"] : c["end"]] == c["quote"]
