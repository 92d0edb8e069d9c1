"""The encoder code trigger and topic share: class weights and the context text of a turn."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data.contract import Turn
from pipelines.stages.encoder.classifier import context_text
from pipelines.stages.encoder.classifier_train import class_weights


def test_class_weights_balance_and_keep_the_loss_scale() -> None:
    labels = [0] * 90 + [1] * 10
    weights = class_weights(labels, 3, "balanced")
    assert weights[1] == pytest.approx(9 * weights[0])
    assert weights[np.array(labels)].mean() == pytest.approx(1.0)
    assert class_weights(labels, 2, "sqrt")[1] == pytest.approx(
        3 * class_weights(labels, 2, "sqrt")[0]
    )
    assert (class_weights(labels, 2, "none") == 1).all()


def test_context_text_takes_the_last_turn() -> None:
    turns = (Turn(role="customer", text="hello"), Turn(role="agent", text="how can I help"))
    assert context_text(turns) == "agent: how can I help"
    assert context_text(()) is None and context_text(None) is None and context_text("x") == "x"
