"""report.md -> a self-contained report.html: the `markdown` package (with its tables extension) renders the page,
and the PNGs it links are inlined as base64 data URIs."""
import base64
import html
import re
from pathlib import Path

import markdown

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}
code{background:#f4f4f4;padding:0 3px}"""


def report_html(md: str, base_dir, title: str = "report") -> str:
    body = markdown.markdown(md, extensions=["tables"])
    base_dir = Path(base_dir)

    def inline(match):
        path = base_dir / html.unescape(match.group(1))
        if not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'
    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
