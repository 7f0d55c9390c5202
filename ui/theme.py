"""Look of the app: a theme using local fonts only, CSS, and the citation-link script."""
from __future__ import annotations

import gradio as gr

# Local font stacks only: the app must work offline, so no web fonts are fetched.
_FONTS = ["system-ui", "PingFang SC", "Noto Sans CJK SC", "Microsoft YaHei", "sans-serif"]


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="teal", font=_FONTS, font_mono=["ui-monospace", "Menlo", "monospace"])


CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto; }
#wy-header h1 { margin: 0.2em 0 0; font-size: 1.6em; }
#wy-header p { margin: 0.2em 0 0.6em; color: var(--body-text-color-subdued); }
.wy-cite { text-decoration: none; font-weight: 600; font-size: 0.85em; vertical-align: super;
  color: var(--color-accent) !important; padding: 0 1px; cursor: pointer; }
.wy-cite:hover { text-decoration: underline; }
.wy-src, .wy-passage { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px;
  margin: 0 0 8px; background: var(--background-fill-secondary); transition: box-shadow .3s; }
.wy-src.wy-flash { box-shadow: 0 0 0 3px var(--color-accent); }
.wy-nosupport { border-style: dashed; opacity: 0.85; }
.wy-src-head { font-weight: 600; }
.wy-marker { color: var(--color-accent); margin-right: 2px; }
.wy-src-meta, .wy-scores, .wy-timings, .wy-hint { font-size: 0.85em; color: var(--body-text-color-subdued); }
.wy-timings { margin-bottom: 8px; }
.wy-src-text { margin: 6px 0 0; line-height: 1.7; white-space: pre-wrap; overflow-wrap: anywhere; }
.wy-src-text mark { background: #ffe58a; color: #222; padding: 0 1px; border-radius: 2px; }
.wy-badge, .wy-refused-tag, .wy-cited { font-size: 0.75em; font-weight: 600; border-radius: 4px; padding: 1px 6px; }
.wy-badge, .wy-refused-tag { background: #fde2e1; color: #a4262c; }
.wy-cited { background: #dff6dd; color: #107c10; margin-left: 4px; }
.wy-refused { border-left: 4px solid #a4262c; padding: 6px 10px; margin-bottom: 8px; background: #fff4f4; color: #222; }
.wy-notice, .wy-notice-inline { color: #8a5a00; }
.wy-notice { border-left: 4px solid #e8a200; background: #fff8e5; padding: 6px 10px; border-radius: 4px; }
.wy-error { color: #a4262c; }
.wy-ok { color: #107c10; }
.wy-empty { color: var(--body-text-color-subdued); font-size: 0.9em; padding: 6px 0; }
.wy-kb-table { width: 100%; border-collapse: collapse; font-size: 0.85em; margin-top: 4px; }
.wy-kb-table th, .wy-kb-table td { padding: 3px 6px; border-bottom: 1px solid var(--border-color-primary); text-align: left; }
.wy-kb-name { overflow-wrap: anywhere; }
.wy-confirm { border-left: 4px solid #a4262c; background: #fff4f4; color: #222; padding: 6px 10px; border-radius: 4px; }
@media (max-width: 720px) {
  .gradio-container { padding: 6px !important; }
  #wy-header h1 { font-size: 1.3em; }
}
"""

# Citation links point into the sources panel; scroll there and flash the card
# instead of letting the chat panel treat them as ordinary links.
HEAD = """
<script>
document.addEventListener("click", function (event) {
  var link = event.target.closest ? event.target.closest("a.wy-cite") : null;
  if (!link) return;
  var id = link.getAttribute("data-src") || (link.getAttribute("href") || "").slice(1);
  var card = document.getElementById(id);
  event.preventDefault();
  event.stopPropagation();
  if (!card) return;
  card.scrollIntoView({behavior: "smooth", block: "center"});
  card.classList.add("wy-flash");
  setTimeout(function () { card.classList.remove("wy-flash"); }, 1600);
}, true);
</script>
"""
