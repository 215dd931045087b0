"""The two-phase recipe: train the head on a frozen encoder, then unfreeze the top K layers."""

from __future__ import annotations

from typing import Any

from sentistream.errors import UsageError

# Where the stack of transformer blocks lives, per architecture family (DistilBERT, BERT/RoBERTa, ...).
LAYER_PATHS = ("transformer.layer", "encoder.layer", "encoder.layers", "layers", "layer")


def encoder_layers(model: Any) -> list[Any]:
    """The transformer blocks of a sequence classifier's encoder, bottom to top."""
    base = model.base_model
    for path in LAYER_PATHS:
        node = base
        for part in path.split("."):
            node = getattr(node, part, None)
        if node is not None and hasattr(node, "__len__") and len(node) > 0:
            return list(node)
    raise UsageError(f"cannot find the encoder layers of {type(model).__name__}; drop --unfreeze-last")


def freeze_encoder(model: Any) -> int:
    """Freeze every encoder weight (the head stays trainable); returns trainable parameter count."""
    for param in model.base_model.parameters():
        param.requires_grad = False
    return trainable_parameters(model)


def unfreeze_top_layers(model: Any, count: int | None) -> int:
    """Unfreeze the top `count` encoder layers (None: the whole encoder); returns trainable count."""
    if count is None:
        for param in model.base_model.parameters():
            param.requires_grad = True
        return trainable_parameters(model)
    freeze_encoder(model)
    layers = encoder_layers(model)
    # BERT's pooler sits between the top layer and the head, so it trains with the top layers.
    pooler = getattr(model.base_model, "pooler", None)
    top = layers[len(layers) - min(count, len(layers)) :] + ([pooler] if pooler is not None and count else [])
    for module in top:
        for param in module.parameters():
            param.requires_grad = True
    return trainable_parameters(model)


def trainable_parameters(model: Any) -> int:
    """Number of weights the optimiser will update."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
