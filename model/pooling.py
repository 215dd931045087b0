"""A sequence classifier that mean-pools the encoder's token vectors (sentence-transformers style).

Hugging Face's `*ForSequenceClassification` heads read the first token (BERT adds a dense + tanh
pooler on top); sentence encoders such as all-MiniLM-L6-v2 were trained to be read by averaging
every real token instead. `MeanPoolingClassifier` is a plain `PreTrainedModel` with its own
`model_type`, registered with the Auto classes when this module is imported, so a bundle that holds
one saves with `save_pretrained`, loads with `AutoModelForSequenceClassification.from_pretrained`
and exports to ONNX like any other classifier: `forward(input_ids, attention_mask).logits`.
A loader that has not imported this module fails loudly ("unrecognized model type") instead of
silently building a first-token head on the wrong weights.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "sentistream-mean-pooling"
POOLINGS = ("cls", "mean")


class MeanPoolingConfig(PretrainedConfig):
    """The encoder's own config (as a dict, under `encoder`) plus the head's labels and dropout."""

    model_type = MODEL_TYPE

    def __init__(self, encoder: dict | None = None, classifier_dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = dict(encoder or {})
        self.classifier_dropout = classifier_dropout
        if self.encoder:
            # Read by the head and by generic code (the bundle's max-length default); DistilBERT calls
            # hidden_size `dim`, which its config object maps.
            encoder_config = self.encoder_config()
            for key in ("hidden_size", "max_position_embeddings", "vocab_size"):
                setattr(self, key, getattr(encoder_config, key, None))

    def encoder_config(self) -> PretrainedConfig:
        """The wrapped encoder's config object."""
        options = {k: v for k, v in self.encoder.items() if k != "model_type"}
        return AutoConfig.for_model(self.encoder["model_type"], **options)


class MeanPoolingClassifier(PreTrainedModel):
    """Encoder -> average of the token vectors under the attention mask -> dropout -> linear."""

    config_class = MeanPoolingConfig
    base_model_prefix = "encoder"
    _supports_sdpa = True

    def __init__(self, config: MeanPoolingConfig) -> None:
        super().__init__(config)
        encoder_config = config.encoder_config()
        encoder_config._attn_implementation = config._attn_implementation or "eager"
        self.encoder = AutoModel.from_config(encoder_config, **_no_pooler(encoder_config))
        self.dropout = torch.nn.Dropout(config.classifier_dropout)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @classmethod
    def from_encoder(cls, base_model: str, labels: list[str], **load_options: Any) -> MeanPoolingClassifier:
        """A new head on the pretrained encoder in `base_model` (a directory or Hub id)."""
        encoder = AutoModel.from_pretrained(base_model, **load_options)
        config = MeanPoolingConfig(
            encoder=encoder.config.to_dict(),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
        model = cls(config)
        # The pretrained pooler (if the encoder has one) is unused here; its weights are left behind.
        model.encoder.load_state_dict(encoder.state_dict(), strict=False)
        return model

    def _init_weights(self, module: Any) -> None:
        if isinstance(module, torch.nn.Linear) and module is getattr(self, "classifier", None):
            module.weight.data.normal_(mean=0.0, std=self.config.encoder.get("initializer_range", 0.02))
            module.bias.data.zero_()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput:
        """Logits (and the cross-entropy loss when `labels` are given)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state
        logits = self.classifier(self.dropout(mean_pool(hidden, attention_mask)))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors where the mask is 1 (padding does not dilute short texts)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _no_pooler(encoder_config: PretrainedConfig) -> dict[str, bool]:
    """BERT-like encoders build a first-token pooler unless told not to; mean pooling never uses it."""
    import inspect

    model_class = AutoModel._model_mapping[type(encoder_config)]
    accepts = "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
    return {"add_pooling_layer": False} if accepts else {}


AutoConfig.register(MODEL_TYPE, MeanPoolingConfig, exist_ok=True)
AutoModelForSequenceClassification.register(MeanPoolingConfig, MeanPoolingClassifier, exist_ok=True)
