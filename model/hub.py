"""Whether the Hugging Face Hub can be asked at all: one cheap check, so a command that would fall
back to the Hub fails (or picks another model) in seconds instead of after minutes of retries."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from huggingface_hub import constants


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hub is allowed (no HF_HUB_OFFLINE) and its host accepts a connection."""
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "TRUE", "YES", "ON"):
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
