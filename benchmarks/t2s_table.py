"""Write rag/t2s.txt, the traditional -> simplified character table that
``rag.normalize.fold_script`` applies before text is compared (never to what is shown).

    pip install opencc   # only to write the table; the library reads the file
    python benchmarks/t2s_table.py

Every ideograph of the CJK Unified Ideographs, Extension A and Compatibility blocks is
converted on its own by OpenCC (Apache 2.0; t2s, then tw2s and hk2s for the Taiwan and
Hong Kong variants), and kept where it becomes one other character, unless it is itself a
simplified character (one that s2t writes otherwise: "么" stays, though t2s maps it to 幺). Character by
character, so a folded text is as long as the original and offsets found in it hold in the
original. Writes two lines: the traditional characters, then their simplified ones.
"""
from __future__ import annotations

from pathlib import Path

import opencc

from rag.normalize import T2S_PATH


def table() -> dict[str, str]:
    converters = [opencc.OpenCC(c) for c in ("t2s", "tw2s", "hk2s")]
    to_traditional = opencc.OpenCC("s2t")
    out: dict[str, str] = {}
    for cp in [*range(0x3400, 0x4DC0), *range(0x4E00, 0xA000), *range(0xF900, 0xFB00)]:
        ch = chr(cp)
        if to_traditional.convert(ch) != ch:
            continue  # a simplified character ("么", which t2s also reads as a variant of 幺) stays
        for c in converters:
            folded = c.convert(ch)
            if len(folded) == 1 and folded != ch:
                out[ch] = folded
                break
    return out


def main() -> None:
    pairs = table()
    Path(T2S_PATH).write_text("".join(pairs) + "\n" + "".join(pairs.values()) + "\n", encoding="utf-8")
    print(f"wrote {len(pairs)} characters to {T2S_PATH}")


if __name__ == "__main__":
    main()
