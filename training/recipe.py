"""The parts of the recipe the stock Trainer lacks: class-weighted loss, layer-wise learning-rate
decay, and accuracy on a sample of the training split next to validation at every evaluation.

Imported only by `training.train` once training starts (torch and transformers load here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from training.freezing import encoder_layers


def balanced_class_weights(label_ids: Sequence[int], n_labels: int) -> torch.Tensor:
    """`n / (k * count_c)` per class (scikit-learn's "balanced"): rare classes weigh more in the loss."""
    counts = np.bincount(np.asarray(label_ids, dtype=int), minlength=n_labels).astype(float)
    weights = len(label_ids) / (n_labels * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


def layerwise_param_groups(model: Any, lr: float, decay: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: the head and top layer at `lr`, each layer below x `decay`, embeddings last.

    Lower layers hold general language knowledge a small fine-tuning set should move least (ULMFiT,
    ELECTRA). Biases and LayerNorm weights (1-d tensors) get no weight decay, as in the stock Trainer.
    """
    layers = encoder_layers(model)
    depth = {id(p): len(layers) - 1 - i for i, layer in enumerate(layers) for p in layer.parameters()}
    encoder = {id(p) for p in model.base_model.parameters()}
    pooler = getattr(model.base_model, "pooler", None)
    head_like = {id(p) for p in pooler.parameters()} if pooler is not None else set()
    groups: dict[tuple[int, bool], list] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        in_embeddings = id(param) in encoder and id(param) not in depth and id(param) not in head_like
        level = len(layers) if in_embeddings else depth.get(id(param), 0)
        groups.setdefault((level, param.ndim > 1), []).append(param)
    return [
        {"params": params, "lr": lr * decay**level, "weight_decay": weight_decay if decays else 0.0}
        for (level, decays), params in sorted(groups.items())
    ]


class RecipeTrainer(Trainer):
    """The HF Trainer with an optional class-weighted loss and layer-wise learning-rate decay."""

    def __init__(
        self,
        *args: Any,
        class_weights: torch.Tensor | None = None,
        layer_lr_decay: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.layer_lr_decay = layer_lr_decay

    def create_optimizer(self) -> Any:
        if self.optimizer is None and self.layer_lr_decay < 1.0:
            optimizer_class, options = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
            groups = layerwise_param_groups(
                self.model, self.args.learning_rate, self.layer_lr_decay, self.args.weight_decay
            )
            self.optimizer = optimizer_class(groups, **options)
        return super().create_optimizer()

    def compute_loss(
        self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if self.class_weights is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits
        weights = self.class_weights.to(device=logits.device, dtype=logits.dtype)
        loss = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
        return (loss, outputs) if return_outputs else loss


class TrainSampleMetrics(TrainerCallback):
    """After each evaluation, score a fixed sample of the training split and log `train_<metric>`.

    Training accuracy far above validation accuracy is overfitting; both low is underfitting. The
    sample is scored in eval mode (no dropout), as validation is, so the two are comparable.
    """

    def __init__(self, sample: Any, metrics: Sequence[str]) -> None:
        self.sample = sample
        self.metrics = list(metrics)
        self.trainer: Trainer | None = None

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is None or len(self.sample) == 0:
            return
        scored = self.trainer.predict(self.sample, metric_key_prefix="train").metrics
        entry = {f"train_{m}": scored[f"train_{m}"] for m in self.metrics if f"train_{m}" in scored}
        state.log_history.append({"epoch": state.epoch, "step": state.global_step, **entry})
