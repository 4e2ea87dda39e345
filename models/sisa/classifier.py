"""What every trained predictor here offers: class probabilities, labels, accuracy."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import nn

__all__ = ["Classifier", "softmax_outputs"]


class Classifier(ABC):
    @abstractmethod
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape ``(n, num_classes)``, float64."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict_proba(x).argmax(axis=1), dtype=np.int64)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        labels = np.asarray(y, dtype=np.int64)
        if len(labels) == 0:
            raise ValueError("accuracy of an empty set is undefined")
        return float((self.predict(x) == labels).mean())


def softmax_outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        inputs = torch.as_tensor(np.asarray(x, dtype=np.float32))
        probabilities = torch.softmax(model(inputs), dim=1)
    return probabilities.numpy().astype(np.float64)
