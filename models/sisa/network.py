"""The per-shard classifier: a small MLP whose initial weights depend only on (seed, shard)."""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from models.sisa.config import SisaConfig
from models.slicing.determinism import seeded_generator

__all__ = ["build_network"]


def build_network(config: SisaConfig, shard: int) -> nn.Sequential:
    """Linear/ReLU layers ``input_dim → *hidden → num_classes``, initialised deterministically.

    Layers are created with ``skip_init`` so that building a network never draws from (or
    advances) torch's global generator; the weights then get nn.Linear's usual distribution
    from a generator seeded by (seed, shard).
    """
    generator = seeded_generator("init", config.seed, shard)
    widths = [config.input_dim, *config.hidden, config.num_classes]
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(pairwise(widths)):
        linear: nn.Linear = torch.nn.utils.skip_init(  # type: ignore[no-untyped-call]
            nn.Linear, fan_in, fan_out
        )
        with torch.no_grad():
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
        layers.append(linear)
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
