"""Markdown tables and one self-contained HTML page (images embedded) rendered from Markdown."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

STYLE = ("body{font-family:'Noto Sans KR','Malgun Gothic',sans-serif;max-width:960px;margin:2em auto}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
         "th{background:#f2f4f7}blockquote{color:#555;border-left:3px solid #ccc;margin:0;padding-left:1em}"
         "code{background:#f2f4f7;padding:0 3px}")


def md_table(rows: list[dict]) -> str:
    """A Markdown table with the keys of the first row as columns (floats to 3 decimals)."""
    if not rows:
        return ""
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(out)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_html(md: str, base: str | Path, title: str = "") -> str:
    """One HTML page from Markdown (tables, links, code, quotes), local images embedded as data URIs."""
    body = markdown.markdown(md, extensions=["tables", "fenced_code"])
    base = Path(base)

    def embed(m: re.Match) -> str:
        src = m.group(2)
        path = base / src
        if src.startswith(("http:", "https:", "data:")) or not path.is_file():
            return m.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'{m.group(1)}data:image/{path.suffix.lstrip(".") or "png"};base64,{data}"'

    body = re.sub(r'(<img [^>]*src=")([^"]+)"', embed, body)
    body = body.replace("<img ", '<img style="max-width:720px" ')
    head = f"<title>{html.escape(title)}</title>" if title else ""
    return (f"<!doctype html><html lang='ko'><meta charset='utf-8'>{head}<style>{STYLE}</style>"
            f"<body>{body}</body></html>")
