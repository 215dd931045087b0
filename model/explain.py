"""Why a text got its label: one weight per word of the input, for any bundle and backend.

Two methods, chosen by the engine that scores:
- **Integrated gradients** (Captum's `LayerIntegratedGradients` on the input embeddings) for
  PyTorch models. The baseline is the same text with every word piece replaced by [PAD] (special
  tokens kept), the output explained is the probability of the predicted label, so the weights
  add up to p(label | text) - p(label | baseline); Captum's convergence delta says how far off the
  integral's approximation is.
- **Occlusion** for engines without gradients (ONNX Runtime, VADER): a word's weight is how much
  the label's probability drops when that word is removed from the text. Engine-agnostic: it only
  calls `engine.predict`, one batch per text.

Both work on the cleaned text the model saw (`model.cleaning`): integrated gradients explains the
word pieces of `clean_text(text)` and maps their character spans back onto the input's words;
occlusion removes an input word and lets the engine clean what is left. A weight > 0 pushed
towards the label, < 0 away from it.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.bundle import Bundle, load_bundle
from model.cleaning import clean_text, validate_text
from sentistream.errors import UsageError

if TYPE_CHECKING:
    from model.engines.base import Engine
    from model.settings import ModelSettings


class ExplainSettings(BaseSettings):
    """How explanations are computed (env prefix SENTISTREAM_EXPLAIN_)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_EXPLAIN_", frozen=True)

    steps: int = Field(default=50, ge=4, le=1000, description="integration steps of integrated gradients")
    max_words: int = Field(default=128, ge=1, description="occlusion: words beyond this many get weight 0")
    max_texts: int = Field(default=16, ge=1, description="most texts in one POST /explain request")


@dataclass(frozen=True)
class TokenWeight:
    """One word of the input and its attribution towards the predicted label."""

    token: str
    weight: float


@dataclass(frozen=True)
class Explanation:
    """A text's label, its probability and one weight per input word (`error` set when unscorable)."""

    text: str
    label: str | None
    score: float | None
    tokens: list[TokenWeight] = field(default_factory=list)
    method: str = ""
    baseline_score: float | None = None  # p(label) with no evidence: what the weights are relative to
    delta: float | None = None  # integrated gradients: Captum's convergence delta
    error: str | None = None

    def to_json(self) -> dict:
        """The `predict --explain --json` object (the command contract of issue #14)."""
        if self.error:
            return {"text": self.text, "error": self.error}
        tokens = [{"token": t.token, "weight": t.weight} for t in self.tokens]
        return {"text": self.text, "label": self.label, "score": self.score, "tokens": tokens}


class Explainer(Protocol):
    """Explains texts; `method` names how."""

    method: str

    def explain(self, texts: Sequence[str]) -> list[Explanation]:
        """One explanation per text, in order; bad texts get `error`, never an exception."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


# ---- words of the input ----------------------------------------------------------------------


def input_words(text: str) -> list[tuple[int, int]]:
    """(start, end) of each whitespace-separated word of `text`."""
    spans, start = [], None
    for i, ch in enumerate(text):
        if ch.isspace():
            if start is not None:
                spans.append((start, i))
                start = None
        elif start is None:
            start = i
    if start is not None:
        spans.append((start, len(text)))
    return spans


def cleaned_to_input(original: str, cleaned: str) -> list[int]:
    """For each character of `cleaned`, the index of the input character it came from.

    Cleaning keeps most characters and replaces a few runs (a URL by "http", an emoji by its
    name), so a character diff finds the kept runs; a replaced run maps proportionally onto the
    run it replaced, and text cleaning added (between kept runs) maps to the input just before.
    """
    mapping = [0] * len(cleaned)
    matcher = difflib.SequenceMatcher(None, cleaned, original, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        for k in range(i1, i2):
            if op == "equal":
                mapping[k] = j1 + (k - i1)
            elif op == "replace":
                mapping[k] = j1 + (k - i1) * (j2 - j1) // (i2 - i1)
            else:  # "delete": only in the cleaned text
                mapping[k] = max(j1 - 1, 0)
    return mapping


def word_weights(original: str, cleaned: str, spans: Sequence[tuple[int, int]], weights: Sequence[float]) -> list[TokenWeight]:  # fmt: skip
    """Sum the weights of cleaned-text pieces (character `spans`) onto the input words they came from."""
    words = input_words(original)
    totals = [0.0] * len(words)
    if not words:
        return []
    to_input = cleaned_to_input(original, cleaned)
    starts = [s for s, _ in words]
    for (start, end), weight in zip(spans, weights, strict=True):
        if end <= start or start >= len(to_input):
            continue  # special tokens have empty spans
        position = to_input[start]
        index = max(i for i, s in enumerate(starts) if s <= position) if position >= starts[0] else 0
        totals[index] += float(weight)
    return [TokenWeight(original[s:e], w) for (s, e), w in zip(words, totals, strict=True)]


# ---- integrated gradients (PyTorch) --------------------------------------------------------------


class IntegratedGradientsExplainer:
    """Captum integrated gradients over a bundle's PyTorch model, in float32."""

    method = "integrated-gradients"

    def __init__(self, bundle: Bundle, device: str = "cpu", steps: int = 50) -> None:
        import torch

        self.bundle, self.device, self.steps = bundle, device, steps
        # float32 and eager attention: gradients through half precision are too coarse to sum right.
        self.model = bundle.load_torch_model(dtype=torch.float32, attn_implementation="eager").to(device)
        self.tokenizer = bundle.load_tokenizer()

    def explain(self, texts: Sequence[str]) -> list[Explanation]:
        """One explanation per text (texts are explained one at a time: each has its own length)."""
        return [self._explain_one(text) for text in texts]

    def close(self) -> None:
        """Drop the model."""
        self.model = None

    def _explain_one(self, text: object) -> Explanation:
        error = validate_text(text)
        if error:
            return Explanation(text=str(text), label=None, score=None, method=self.method, error=error)
        assert isinstance(text, str)
        cleaned = clean_text(text, self.bundle.meta.cleaning)
        encoded = self.tokenizer(
            cleaned, truncation=True, max_length=self.bundle.meta.max_length, return_offsets_mapping=True,
            return_special_tokens_mask=True, return_tensors="pt",
        )  # fmt: skip
        weights, probs, baseline_probs, delta = self._attribute(encoded)
        target = int(probs.argmax())
        spans = [tuple(span) for span in encoded["offset_mapping"][0].tolist()]
        return Explanation(
            text=text,
            label=self.bundle.labels[target],
            score=float(probs[target]),
            tokens=word_weights(text, cleaned, spans, weights),
            method=self.method,
            baseline_score=float(baseline_probs[target]),
            delta=delta,
        )

    def _attribute(self, encoded: Any) -> tuple[list[float], Any, Any, float]:
        import torch
        from captum.attr import LayerIntegratedGradients

        ids = encoded["input_ids"].to(self.device)
        mask = encoded["attention_mask"].to(self.device)
        special = encoded["special_tokens_mask"].to(self.device).bool()
        baseline = torch.where(special, ids, torch.full_like(ids, self.tokenizer.pad_token_id or 0))

        def probabilities(input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits.softmax(-1)

        with torch.no_grad():
            probs = probabilities(ids, mask)[0]
            baseline_probs = probabilities(baseline, mask)[0]
        target = int(probs.argmax())
        integrated = LayerIntegratedGradients(probabilities, self.model.get_input_embeddings())
        attributions, delta = integrated.attribute(
            ids, baselines=baseline, target=target, additional_forward_args=(mask,), n_steps=self.steps,
            internal_batch_size=self.steps, return_convergence_delta=True,
        )  # fmt: skip
        per_token = attributions.sum(dim=-1)[0].detach().cpu().tolist()
        return per_token, probs.cpu(), baseline_probs.cpu(), float(delta.abs().max())


# ---- occlusion (any engine) ----------------------------------------------------------------------


class OcclusionExplainer:
    """Leave-one-word-out over any engine: weight = p(label | text) - p(label | text without the word)."""

    method = "occlusion"

    def __init__(self, engine: Engine, max_words: int = 128) -> None:
        self.engine, self.max_words = engine, max_words

    def explain(self, texts: Sequence[str]) -> list[Explanation]:
        """One explanation per text; each text costs one engine call of (words + 1) texts."""
        return [self._explain_one(text) for text in texts]

    def close(self) -> None:
        """The engine belongs to whoever passed it in."""

    def _explain_one(self, text: object) -> Explanation:
        error = validate_text(text)
        if error:
            return Explanation(text=str(text), label=None, score=None, method=self.method, error=error)
        assert isinstance(text, str)
        words = [text[s:e] for s, e in input_words(text)]
        shown = words[: self.max_words]
        without = [" ".join(words[:i] + words[i + 1 :]) for i in range(len(shown))]
        full, *rest = self.engine.predict([text, *without])
        if not full.ok:
            return Explanation(text=text, label=None, score=None, method=self.method, error=full.error)
        no_evidence = 1.0 / len(self.engine.labels)  # what is left when the only word is removed
        weights = [full.score - (p.scores[full.label] if p.ok else no_evidence) for p in rest]
        weights += [0.0] * (len(words) - len(shown))
        tokens = [TokenWeight(w, float(x)) for w, x in zip(words, weights, strict=True)]
        return Explanation(
            text=text, label=full.label, score=full.score, tokens=tokens, method=self.method,
            baseline_score=no_evidence,
        )  # fmt: skip


# ---- choosing and running --------------------------------------------------------------------


def explainer_for(engine: Engine, model: str | None, settings: ExplainSettings | None = None) -> Explainer:
    """Integrated gradients when `engine` is PyTorch (it loads its own float32 copy), else occlusion."""
    settings = settings or ExplainSettings()
    if engine.backend == "torch" and model is not None:
        return IntegratedGradientsExplainer(load_bundle(model), engine.device, settings.steps)
    return OcclusionExplainer(engine, settings.max_words)


# ANSI backgrounds: green pushes towards the label, red away from it; stronger = brighter.
_GREEN, _RED = ("48;5;22", "48;5;28", "48;5;34"), ("48;5;52", "48;5;88", "48;5;124")


def render_terminal(explanation: Explanation, colour: bool) -> str:
    """One line: label, score, then each word with its weight (ANSI-coloured when `colour`)."""
    if explanation.error:
        return f"error\t{explanation.error}\t{explanation.text}"
    top = max((abs(t.weight) for t in explanation.tokens), default=0.0) or 1.0
    parts = []
    for t in explanation.tokens:
        if colour:
            shades = _GREEN if t.weight >= 0 else _RED
            level = min(int(abs(t.weight) / top * len(shades)), len(shades) - 1)
            parts.append(f"\x1b[{shades[level]}m{t.token}\x1b[0m")
        else:
            parts.append(f"{t.token}({t.weight:+.3f})")
    return f"{explanation.label}\t{explanation.score:.3f}\t{' '.join(parts)}"


def run_explain(
    texts: Sequence[str], model_settings: ModelSettings, as_json: bool, csv_input: object = None, out: IO[str] | None = None
) -> int:  # fmt: skip
    """`sentistream predict --explain [--json] TEXT...`: print one explanation per text; exit status."""
    if csv_input is not None:
        raise UsageError("--explain takes texts as arguments, not --input; explain a few texts at a time")
    out = out or sys.stdout
    engine = model_settings.load_engine()
    explainer = explainer_for(engine, model_settings.model)
    try:
        for explanation in explainer.explain(list(texts)):
            if as_json:
                print(json.dumps(explanation.to_json(), ensure_ascii=False), file=out)
            else:
                print(render_terminal(explanation, colour=out.isatty()), file=out)
    finally:
        explainer.close()
        engine.close()
    return 0
