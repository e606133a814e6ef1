"""TinyNet: two linear layers with a ReLU between them."""

from __future__ import annotations

import numpy as np
import paddle

INPUT_FEATURES = 4
HIDDEN_FEATURES = 8
OUTPUT_FEATURES = 2


class TinyNet(paddle.nn.Layer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = paddle.nn.Linear(INPUT_FEATURES, HIDDEN_FEATURES)
        self.relu = paddle.nn.ReLU()
        self.fc2 = paddle.nn.Linear(HIDDEN_FEATURES, OUTPUT_FEATURES)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


def example_input(batch: int = 3) -> np.ndarray:
    """A fixed input (no randomness), for the smoke test and the before/after-export check."""
    values = np.arange(batch * INPUT_FEATURES, dtype="float32").reshape(batch, INPUT_FEATURES)
    return (values - values.mean()) / (values.std() + 1e-6)
