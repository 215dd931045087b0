"""Names that come from a topic (labels, models, explanation methods), made safe to show on the page.

`plain_name` keeps the characters real names use (`:` and `/` among them: `host:pid`, `org/model`),
so on its own it can still read as a link to Streamlit's markdown (`https://evil.example/login`,
`www.evil.example`, `a@evil.example`). Wherever markdown renders it (st.warning, st.caption, ...)
use `shown_name`: the plain name as inline code, inside which markdown makes no link, emphasis or
HTML; `plain_name` alone is for places that show text as text (tables, chart tooltips).
"""

from __future__ import annotations

import re


def plain_name(name: object) -> str:
    """A name from a topic (label, model) reduced to characters no markdown or HTML can be made of."""
    return re.sub(r"[^\w\-.@/: ]", "", str(name))[:80] or "?"


def shown_name(name: object) -> str:
    """`plain_name` for markdown: an inline code span (plain_name leaves no backtick to close it)."""
    return f"`{plain_name(name)}`"
