"""Membership evidence for a certificate: do erased records still look like training data?"""

from __future__ import annotations

import numpy as np

from models.sisa.classifier import Classifier

__all__ = ["membership_p_values", "record_losses"]

# Keeps -log(p) finite when a model puts (numerically) zero probability on the true class.
_MIN_PROBABILITY = 1e-12


def record_losses(model: Classifier, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-record cross-entropy of the model's probabilities."""
    labels = np.asarray(y, dtype=np.int64)
    probabilities = model.predict_proba(x)
    true_class = probabilities[np.arange(len(labels)), labels]
    return np.asarray(-np.log(np.maximum(true_class, _MIN_PROBABILITY)), dtype=np.float64)


def membership_p_values(
    ensemble: Classifier,
    member_x: np.ndarray,
    member_y: np.ndarray,
    nonmember_x: np.ndarray,
    nonmember_y: np.ndarray,
) -> list[float]:
    """Conformal p-value of each erased record's loss among held-out non-members' losses.

    ``p = (1 + #{non-member loss <= record loss}) / (n + 1)``. Models fit their training data
    better than unseen data, so a record the model still "remembers" has an unusually low loss
    and a small p-value; a record the model treats like any unseen one gets a p-value that is
    uniform on ``{1/(n+1), ..., 1}`` when it is exchangeable with the non-members.

    This is evidence, not a guarantee: a large p-value means the loss test found no trace of
    the record, which other tests might. Exactness of the retrain is what the certificate
    guarantees; the p-value illustrates it.
    """
    reference = np.sort(record_losses(ensemble, nonmember_x, nonmember_y))
    if len(reference) == 0:
        raise ValueError("membership p-values need at least one non-member record")
    losses = record_losses(ensemble, member_x, member_y)
    at_most = np.searchsorted(reference, losses, side="right")
    return [float(v) for v in (1.0 + at_most) / (len(reference) + 1.0)]
