"""Who may see the dashboard and how it reaches workers that require a token (issue #24)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import explanations, scoring
from dashboard.settings import DashboardSettings, worker_token

TOKEN = "0123456789abcdef0123456789abcdef"
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
        "client_id": "sentistream", "client_secret": "s",
        "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}  # fmt: skip


def gated_page() -> None:
    import streamlit as st

    from dashboard.app import sign_in_ui

    sign_in_ui()
    st.write("the stream")


def test_with_auth_configured_nothing_renders_before_sign_in() -> None:
    at = AppTest.from_function(gated_page, default_timeout=30)
    at.secrets["auth"] = AUTH
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [b.label for b in at.button] == ["Sign in"]
    assert "the stream" not in [m.value for m in at.markdown]


def test_without_auth_configured_the_page_renders_as_before() -> None:
    at = AppTest.from_function(gated_page, default_timeout=30).run()
    assert not at.exception and not at.button
    assert "the stream" in [m.value for m in at.markdown]


class Answer:
    def __init__(self, body: dict) -> None:
        self.status_code, self._body, self.content = 200, body, b""

    def json(self) -> dict:
        return self._body


@pytest.fixture
def posted(monkeypatch) -> list[dict]:
    import requests

    calls: list[dict] = []

    def post(url, **kwargs):
        calls.append({"url": url, **kwargs})
        if url.endswith("/explain"):
            return Answer({"model": "m", "method": "occlusion", "explanations": []})
        return Answer({"model": "m", "predictions": [{"label": "positive", "score": 0.9, "scores": {}}]})

    monkeypatch.setattr(requests, "post", post)
    return calls


def test_the_dashboard_sends_the_workers_token_to_predict_and_explain(posted, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    token = worker_token(DashboardSettings(worker_token_file=tmp_path / "token"))
    assert token == TOKEN
    with contextlib.suppress(Exception):  # the stub's answer may not pass every check: the request counts
        scoring.score_with_worker("http://worker:6066", ["fine"], token=token)
    explanations.explain_with_worker("http://worker:6066", ["fine"], token=token)
    assert [c["headers"].get("Authorization") for c in posted] == [f"Bearer {TOKEN}"] * 2
    assert worker_token(DashboardSettings()) is None
    assert worker_token(DashboardSettings(worker_token_file=tmp_path / "missing")) is None
