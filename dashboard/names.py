"""Names that come from a topic (labels, models, explanation methods), made safe to show on the page."""

from __future__ import annotations

import re


def plain_name(name: object) -> str:
    """A name from a topic (label, model) reduced to characters no markdown or HTML can be made of."""
    return re.sub(r"[^\w\-.@/: ]", "", str(name))[:80] or "?"
