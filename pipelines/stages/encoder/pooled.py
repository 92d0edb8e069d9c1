"""A mean-pooled BERT sentence classifier, loadable by `AutoModelForSequenceClassification`.

all-MiniLM-L6-v2 was trained as a sentence encoder: the mean of its token states (padding
masked out), L2-normalised, is its sentence embedding; its [CLS] state and BERT pooler were never
trained for sentence meaning. `MeanPoolBertForSequenceClassification` puts a linear head on that
embedding, so fine-tuning starts from the representation the checkpoint is good at (and the head
can start from a linear probe fitted on it, see `classifier.linear_probe_head`).

The config has its own `model_type`, so a folder saved with it is never silently loaded as a
[CLS]-pooled `BertForSequenceClassification`; `register()` (called by the classifier's training
and loading code) makes the Auto classes know it. Weights are plain safetensors.
"""

from __future__ import annotations

import functools

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

MODEL_TYPE = "casepilot_mean_pool_bert"


class MeanPoolBertConfig(BertConfig):
    """BertConfig of the mean-pooled classifier (its own model_type for the Auto classes)."""

    model_type = MODEL_TYPE


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Return the L2-normalised mean of the token states over non-padding positions."""
    if attention_mask is None:
        pooled = hidden.mean(dim=1)
    else:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


class MeanPoolBertForSequenceClassification(BertPreTrainedModel):
    """BERT encoder → masked mean pooling → L2 normalisation → linear head (logits)."""

    config_class = MeanPoolBertConfig
    config: MeanPoolBertConfig

    def __init__(self, config: MeanPoolBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def sentence_embedding(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Return the normalised mean-pooled embedding the head reads."""
        kwargs.pop("labels", None)
        hidden = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            return_dict=True,
            **kwargs,
        ).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        embedding = self.sentence_embedding(input_ids, attention_mask, token_type_ids, **kwargs)
        logits = self.classifier(embedding)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.float(), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


@functools.cache
def register() -> None:
    """Make AutoConfig / AutoModelForSequenceClassification load the mean-pooled classifier."""
    AutoConfig.register(MODEL_TYPE, MeanPoolBertConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(
        MeanPoolBertConfig, MeanPoolBertForSequenceClassification, exist_ok=True
    )


def build_classifier(base: str, labels: list[str], pooling: str) -> torch.nn.Module:
    """Return a sequence classifier on `base` with a fresh head: [CLS] pooler or mean pooling."""
    names = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    if pooling == "mean":
        register()
        bert = BertConfig.from_pretrained(base).to_dict()
        bert.pop("model_type", None)
        config = MeanPoolBertConfig(**{**bert, **names})
        return MeanPoolBertForSequenceClassification.from_pretrained(base, config=config)
    if pooling == "cls":
        return AutoModelForSequenceClassification.from_pretrained(base, **names)
    raise ValueError(f"unknown pooling {pooling!r}; set `pooling:` to 'cls' or 'mean'")


@torch.no_grad()
def head_features(model: torch.nn.Module, batches) -> torch.Tensor:
    """Return what the model's linear head reads, for padded batches, in eval mode (frozen)."""
    was_training = model.training
    model.eval()
    rows = []
    for batch in batches:
        batch = {k: v for k, v in batch.items() if k != "labels"}
        if isinstance(model, MeanPoolBertForSequenceClassification):
            rows.append(model.sentence_embedding(**batch).float())
        else:  # BertForSequenceClassification and kin: the pooler output feeds the head
            rows.append(model.base_model(**batch, return_dict=True).pooler_output.float())
    model.train(was_training)
    return torch.cat(rows)


def fit_linear_probe(
    model: torch.nn.Module,
    fit: tuple[torch.Tensor, list[int]],
    val: tuple[torch.Tensor, list[int]],
    class_weight: dict[int, float],
    grid: tuple[float, ...] = (1.0, 10.0, 100.0),
) -> dict[str, float]:
    """Set the head to a logistic regression on frozen features (C picked on `val`); LP-FT.

    Returns the probe's validation accuracy per C. Classes absent from `fit` keep a zero row
    and the lowest bias, so they are never predicted before fine-tuning.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x_fit, y_fit = fit[0].numpy(), np.asarray(fit[1])
    x_val, y_val = val[0].numpy(), np.asarray(val[1])
    probes = {
        c: LogisticRegression(C=c, max_iter=2000, class_weight=class_weight).fit(x_fit, y_fit)
        for c in grid
    }
    scores = {c: float(p.score(x_val, y_val)) for c, p in probes.items()}
    probe = probes[max(scores, key=scores.get)]
    head = model.classifier
    weight = np.zeros(tuple(head.weight.shape))
    bias = np.full(head.bias.shape[0], float(probe.intercept_.min()) - 10.0)
    classes = probe.classes_
    if len(classes) == 2:  # sklearn's binary form: one row for classes_[1]
        coef, intercept = probe.coef_[0] / 2, probe.intercept_[0] / 2
        weight[classes[1]], weight[classes[0]] = coef, -coef
        bias[classes[1]], bias[classes[0]] = intercept, -intercept
    else:
        weight[classes], bias[classes] = probe.coef_, probe.intercept_
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))
    return {f"probe_val_accuracy_C{c:g}": s for c, s in scores.items()}
