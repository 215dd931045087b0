"""'Try it' explanations: each word of the text highlighted by its weight towards the label.

The worker explains (POST /explain) when one answers; otherwise `model.explain` does in this
process. Rendering never builds HTML from the text: the words are cells of a `st.dataframe`, whose
background colour (a pandas Styler) carries the weight, so markup in a tweet stays plain text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from dashboard.names import shown_name
from dashboard.scoring import WorkerUnavailableError
from model.explain import explainer_for
from model.settings import ModelSettings

POSITIVE, NEGATIVE = (44, 160, 44), (214, 39, 40)  # the label colours of dashboard/charts.py


def explain_with_worker(
    worker_url: str, texts: Sequence[str], timeout: float = 60.0, token: str | None = None
) -> dict:
    """The worker's POST /explain answer: {"model", "method", "explanations": [...]}."""
    import requests

    from dashboard.settings import bearer

    try:
        response = requests.post(
            f"{worker_url.rstrip('/')}/explain",
            json={"texts": list(texts)},
            timeout=timeout,
            headers=bearer(token),
        )
    except requests.RequestException as exc:
        raise WorkerUnavailableError(str(exc)) from None
    if response.status_code >= 500 or response.status_code == 404:
        raise WorkerUnavailableError(f"worker answered {response.status_code}")
    body = response.json()
    if response.status_code != 200:
        raise ValueError(body.get("error", f"worker answered {response.status_code}"))
    return body


def explain_locally(engine, model: str | None, texts: Sequence[str]) -> dict:
    """The same answer computed in this process with `model.explain`."""
    explainer = explainer_for(engine, model)
    explanations = [e.to_json() for e in explainer.explain(list(texts))]
    return {"model": engine.name, "method": explainer.method, "explanations": explanations}


def explain_texts(
    worker_url: str, texts: Sequence[str], local: Callable[[Sequence[str]], dict], token: str | None = None
) -> dict:
    """The worker's explanations when a worker answers, else `local(texts)`."""
    try:
        return explain_with_worker(worker_url, texts, token=token)
    except WorkerUnavailableError:
        return local(texts)


def words_frame(explanation: dict) -> pd.DataFrame:
    """Columns word, weight: one row per word of the input, in order."""
    tokens = explanation.get("tokens") or []
    return pd.DataFrame(
        {"word": [t["token"] for t in tokens], "weight": [float(t["weight"]) for t in tokens]}
    )


def weight_colour(weight: float, top: float) -> str:
    """A CSS background: green towards the label, red away from it, stronger the heavier."""
    red, green, blue = POSITIVE if weight >= 0 else NEGATIVE
    alpha = 0.0 if top <= 0 else min(abs(weight) / top, 1.0) * 0.8
    return f"background-color: rgba({red}, {green}, {blue}, {alpha:.2f})"


def explanation_ui(explanation: dict) -> None:
    """The label and each word of the text on a background coloured by its weight."""
    import streamlit as st

    if explanation.get("error"):
        st.error("The model could not explain this text:")
        st.text(explanation["error"])
        return
    frame = words_frame(explanation)
    top = frame["weight"].abs().max() if not frame.empty else 0.0
    styled = frame.style.apply(lambda row: [weight_colour(row["weight"], top)] * len(row), axis=1)
    styled = styled.format({"weight": "{:+.3f}"})
    st.caption("Words that pushed towards the label are green, away from it red.")
    st.dataframe(styled, hide_index=True, use_container_width=True)


def try_it_ui(worker_url: str, local_engine: Callable[[], object], token: str | None = None) -> None:
    """'Explain' for the text of the 'Try it' box (`try_text`), as app.py calls it after try_text_ui."""
    import streamlit as st

    def local(texts: Sequence[str]) -> dict:
        return explain_locally(local_engine(), ModelSettings().model, texts)

    explain_ui(worker_url, st.session_state.get("try_text") or "", local, token)


def explain_ui(
    worker_url: str, text: str, local: Callable[[Sequence[str]], dict], token: str | None = None
) -> None:
    """An 'Explain' button under 'Try it': why the model chose its label for `text`."""
    import streamlit as st

    if not (st.button("Explain", key="try_explain") and text.strip()):
        return
    with st.spinner("Explaining…"):
        answer = explain_texts(worker_url, [text], local, token)
    explanation_ui(answer["explanations"][0])
    st.caption(f"{shown_name(answer.get('method'))} on {shown_name(answer.get('model'))}")
