"""A public base under per-shard heads: a frozen feature extractor that holds no subject data.

SISA's price is that each shard sees 1/S of the data; the SISA paper's mitigation is transfer
learning from public data. The base is trained once, elsewhere, on data that belongs to no data
subject (public weights, or a network pretrained on public or generated data); every shard then
trains only a small head on its features. Erasure never touches the base, so it must never see a
subject's record: that is an attestation by whoever supplies it, recorded with its content hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn

from models.slicing.determinism import deterministic_torch

__all__ = ["PublicBase"]


class PublicBase:
    """A frozen ``network`` mapping raw inputs ``(n, d)`` to features ``(n, feature_dim)``.

    ``content_hash`` identifies it: a config names its base by this hash
    (``SisaConfig.base_hash``), which enters every checkpoint address, so a base whose weights
    change can never be combined with heads trained on the old one's features.
    """

    def __init__(self, network: nn.Module, *, input_dim: int, name: str, provenance: str) -> None:
        if not provenance.strip():
            raise ValueError("say where the base's weights come from (provenance)")
        self.network = network.eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.name = name
        self.provenance = provenance
        self._hash = _content_hash(self.network)
        self.input_dim = input_dim
        with torch.inference_mode():
            self.feature_dim = int(self.network(torch.zeros(1, input_dim)).reshape(1, -1).shape[1])

    @property
    def content_hash(self) -> str:
        """sha256 over the architecture's description and every tensor of the state dict."""
        return self._hash

    def features(self, x: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
        """float32 features, computed deterministically (the same bits on every call)."""
        if _content_hash(self.network) != self._hash:
            raise RuntimeError("the public base's weights changed after it was identified")
        inputs = torch.as_tensor(np.asarray(x, dtype=np.float32))
        parts: list[np.ndarray] = []
        with deterministic_torch(), torch.inference_mode():
            for start in range(0, len(inputs), batch_size):
                parts.append(self.network(inputs[start : start + batch_size]).numpy())
        if not parts:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def attestation(self) -> dict[str, Any]:
        """What a certificate records about the base."""
        return {
            "name": self.name,
            "content_hash": self.content_hash,
            "provenance": self.provenance,
            "holds_subject_data": False,
            "frozen": True,
            "input_dim": self.input_dim,
            "feature_dim": self.feature_dim,
        }


def _content_hash(network: nn.Module) -> str:
    digest = hashlib.sha256(b"lethe-public-base/v1\x1f")
    digest.update(repr(network).encode("utf-8"))
    for name, tensor in sorted(network.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"\x1f{name}\x1f{value.dtype}\x1f{tuple(value.shape)}\x1f".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()
