"""Text normalisation for Chinese documents and questions.

NFKC alone would turn Chinese punctuation such as ，into an ASCII comma, which
changes how the text reads and breaks sentence splitting, so it is applied per
character and skipped for CJK punctuation.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

# Full-width punctuation that is ordinary Chinese typography and stays as is.
KEEP_CHARS = frozenset("，。、；：？！“”‘’（）《》〈〉【】〔〕「」『』…—～·")

# CJK Radicals Supplement (U+2E80-U+2EFF) glyphs standing for whole ideographs.
# PDFs printed by Chromium often carry them ("⻘⽲社区", "馆⻓"); NFKC maps the
# Kangxi Radicals block (U+2F00-U+2FD5) but has no mapping for most of these.
_RADICALS = {
    "⺆": "冂", "⺇": "几", "⺊": "卜", "⺋": "㔾", "⺌": "小", "⺍": "小", "⺎": "兀", "⺏": "尣", "⺐": "尢",
    "⺒": "巳", "⺓": "幺", "⺔": "彑", "⺕": "彐", "⺖": "忄", "⺗": "㣺", "⺘": "扌", "⺙": "攵", "⺛": "旡",
    "⺜": "日", "⺝": "月", "⺞": "歺", "⺟": "母", "⺠": "民", "⺡": "氵", "⺢": "氺", "⺣": "灬", "⺤": "爫",
    "⺥": "爫", "⺦": "丬", "⺧": "牛", "⺨": "犭", "⺩": "王", "⺪": "疋", "⺫": "罒", "⺬": "示", "⺭": "礻",
    "⺮": "竹", "⺯": "糸", "⺰": "纟", "⺱": "罒", "⺲": "罒", "⺳": "㓁", "⺶": "羊", "⺷": "羊", "⺹": "耂",
    "⺺": "肀", "⺻": "聿", "⺼": "月", "⺽": "臼", "⺾": "艹", "⺿": "艹", "⻀": "艹", "⻁": "虎", "⻂": "衤",
    "⻃": "覀", "⻄": "西", "⻅": "见", "⻆": "角", "⻈": "讠", "⻉": "贝", "⻋": "车", "⻌": "辶", "⻍": "辶",
    "⻎": "辶", "⻏": "阝", "⻐": "钅", "⻑": "長", "⻒": "镸", "⻓": "长", "⻔": "门", "⻖": "阝", "⻗": "雨",
    "⻘": "青", "⻙": "韦", "⻚": "页", "⻛": "风", "⻜": "飞", "⻝": "食", "⻟": "飠", "⻠": "饣", "⻢": "马",
    "⻣": "骨", "⻤": "鬼", "⻥": "鱼", "⻦": "鸟", "⻧": "卤", "⻨": "麦", "⻩": "黄", "⻪": "黾", "⻫": "斉",
    "⻬": "齐", "⻭": "歯", "⻮": "齿", "⻯": "竜", "⻰": "龙", "⻱": "龜", "⻲": "亀", "⻳": "龟",
}

_CJK_RANGES = (
    ("\u3000", "\u303f"),  # CJK symbols and punctuation
    ("\u3400", "\u4dbf"),
    ("\u4e00", "\u9fff"),
    ("\uf900", "\ufaff"),
    ("\uff00", "\uffef"),  # full-width forms (punctuation kept above)
    ("\u2018", "\u201d"),  # curly quotes
    ("\u2026", "\u2026"),
    ("\u2014", "\u2014"),
    ("\u00b7", "\u00b7"),
)
_CJK_CLASS = "".join(f"{a}-{b}" if a != b else a for a, b in _CJK_RANGES)
# A space touching a CJK character or punctuation is a segmentation artefact.
_SPACE_NEAR_CJK = re.compile(rf"[ \t]+(?=[{_CJK_CLASS}])|(?<=[{_CJK_CLASS}])[ \t]+")
# Full-width letters/digits split one per word ("ｉ Ｗ ｉ ｌ ｌ") were one token.
_SPLIT_FULLWIDTH = re.compile(r"(?<=[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]) (?=[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_MULTI_SPACE = re.compile(r"[ \t]{2,}")


def _char_nfkc(ch: str) -> str:
    if ch in KEEP_CHARS or ch.isascii():
        return ch
    if ch in _RADICALS:
        return _RADICALS[ch]
    out = unicodedata.normalize("NFKC", ch)
    # Never let NFKC expand one character into ASCII punctuation soup ("⑴" -> "(1)") is fine,
    # but spaces produced from ideographic space are handled by the space rules below.
    return out


def clean_control(text: str) -> str:
    """Remove control characters and lone surrogates (keeps newlines and tabs)."""
    return _SURROGATE.sub("", _CONTROL.sub("", text))


def normalize_text(text: str) -> str:
    """Normalise one document or question.

    - full-width letters and digits become ASCII, other compatibility forms NFKC;
    - Kangxi and supplementary radicals become the ideographs they stand for ("⻘⽲" -> "青禾");
    - Chinese punctuation (，。“”…) is kept;
    - spaces next to CJK characters are removed, spaces between Latin words kept;
    - control characters and invalid surrogates are dropped.

    The function is idempotent: ``normalize_text(normalize_text(s)) == normalize_text(s)``.
    """
    text = clean_control(text)
    text = _SPLIT_FULLWIDTH.sub("", text)
    text = "".join(_char_nfkc(ch) for ch in text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = []
    for line in text.split("\n"):
        line = _SPACE_NEAR_CJK.sub("", line)
        line = _MULTI_SPACE.sub(" ", line).strip()
        lines.append(line)
    return "\n".join(lines).strip()


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


#: Traditional -> simplified characters (two lines of equal length; benchmarks/t2s_table.py writes it).
T2S_PATH = Path(__file__).with_name("t2s.txt")


@lru_cache(maxsize=1)
def _t2s() -> tuple[re.Pattern, dict[str, str]]:
    try:
        traditional, simplified = T2S_PATH.read_text(encoding="utf-8").split("\n")[:2]
    except (OSError, ValueError) as e:
        raise RuntimeError(f"cannot read the character table {T2S_PATH}: {e}; reinstall wenyuan "
                           "or write it again with benchmarks/t2s_table.py") from e
    if not traditional or len(traditional) != len(simplified):
        raise RuntimeError(f"the character table {T2S_PATH} is damaged; write it again with benchmarks/t2s_table.py")
    return re.compile(f"[{re.escape(traditional)}]"), dict(zip(traditional, simplified))


def fold_script(text: str) -> str:
    """``text`` with traditional characters written simplified, one for one (the same length),
    so that a question and a passage compare alike whatever script each is in ("為什麼" and
    "为什么"). For matching only: what is shown keeps the document's own characters. Only the
    characters found are replaced (a simplified text holding one "著" pays for one): on 60
    simplified passages a query 0.21 ms against 0.66 ms for ``str.translate``, which is a
    little faster on wholly traditional text (1.6 against 2.0 ms)."""
    found, table = _t2s()
    return found.sub(lambda m: table[m.group()], text)
