"""The worker's HTTP API, the contract between the worker and its clients (the dashboard, scripts),
described by the pydantic models that shape it: GET /openapi.json.

`PredictRequest` validates the bodies of POST /predict and POST /explain; `PredictResponse` and
`ExplainResponse` build their answers (stream/worker/web.py, stream/worker/explain_view.py). The OpenAPI document
is generated from those same models, so it cannot drift from what the views accept and send; a
client can be generated from it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from sentistream import __version__

# POST /predict's default limits (the worker's --max-predict-texts / --max-predict-bytes); clients
# such as the dashboard cut their requests to fit them.
MAX_PREDICT_TEXTS = 256
MAX_PREDICT_BYTES = 1_048_576


class PredictRequest(BaseModel):
    """The body of POST /predict and POST /explain."""

    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(min_length=1, description="the texts to score, in order")


class ScoredText(BaseModel):
    """One text's verdict."""

    label: str
    score: float = Field(description="probability of `label`")
    scores: dict[str, float] = Field(description="label -> probability")
    truncated: bool = Field(default=False, description="the text was cut to the model's max length")


class TextError(BaseModel):
    """A text that could not be scored, and why (the rest of the request is still answered)."""

    error: str


class PredictResponse(BaseModel):
    """The answer of POST /predict: one entry per text, in order."""

    model: str = Field(description="the model that scored them")
    predictions: list[ScoredText | TextError]


class TokenWeight(BaseModel):
    token: str
    weight: float


class Explained(BaseModel):
    """One text's label and each word's weight towards it."""

    text: str
    label: str
    score: float
    tokens: list[TokenWeight]


class ExplainError(BaseModel):
    text: str
    error: str


class ExplainResponse(BaseModel):
    """The answer of POST /explain: one entry per text, in order."""

    model: str | None = Field(description="the model explained (its name)")
    method: str = Field(description="how the weights were computed (e.g. integrated gradients)")
    explanations: list[Explained | ExplainError]


class ErrorResponse(BaseModel):
    """Any refused request: a one-line reason."""

    error: str


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _post(summary: str, answer: type[BaseModel], refusals: dict[str, str]) -> dict:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}, {}],  # required when the views bind beyond loopback
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(PredictRequest)}},
            },
            "responses": {
                "200": _json(answer, "answered"),
                **{c: _json(ErrorResponse, d) for c, d in refusals.items()},
            },
        }
    }


def _probe(summary: str) -> dict:
    health = {
        "description": "the worker's state",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    return {"get": {"summary": summary, "responses": {"200": health, "503": health}}}


REFUSALS = {
    "400": "a body that is not the request's shape",
    "401": "no or a wrong bearer token",
    "408": "the body did not arrive in time",
    "413": "the body or the number of texts is over the limit",
    "422": "`texts` is not a list of strings",
    "429": "too many requests at once",
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the worker's views."""
    models = [PredictRequest, ScoredText, TextError, PredictResponse, TokenWeight, Explained, ExplainError]
    models += [ExplainResponse, ErrorResponse]
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "sentistream worker", "version": __version__},
        "paths": {
            "/predict": _post("score texts with the model the stream uses", PredictResponse, REFUSALS),
            "/explain": _post(
                "each word's weight towards each text's label",
                ExplainResponse,
                {**REFUSALS, "503": "the explanation took too long"},
            ),
            "/live": _probe("liveness: 503 only when a restart would help"),
            "/ready": _probe("readiness: 503 while starting or rebalancing"),
            "/health": _probe("ready and alive, with the worker's details"),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "text exposition format", "content": {"text/plain": {}}}
                    },
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
