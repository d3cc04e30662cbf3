"""A trained projection head on top of the frozen offline encoder (taught in notebook 02).

The seed tutorial's deep dive fine-tunes CLIP; offline we teach the same idea on what we have. ConSE maps an
image's ImageNet class probabilities into the text space with a fixed matrix (the class-name embeddings).
The head learns a correction from the classifier's logits, starting at zero so that before training it *is*
ConSE:

    image_embedding = normalize(conse(image) + logits(image) @ W + b)

Both towers stay frozen; W and b are trained (`measure.finetune.train_head`) with a contrastive (InfoNCE) loss
that pulls each training photo towards its own caption's MiniLM embedding and away from the other captions.

Example:
    >>> head.save("data/cache/head.npz"); load_encoder("conse-effnet-minilm", head="data/cache/head.npz")
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encoders import l2_normalize


@dataclass(frozen=True)
class ProjectionHead:
    """The learned correction: `weight` [1000, dim] and `bias` [dim], applied to ImageNet logits."""

    weight: np.ndarray
    bias: np.ndarray

    @property
    def tag(self) -> str:
        """A short fingerprint of the weights, part of the encoder's name so collections never mix heads."""
        return hashlib.sha1(self.weight.tobytes() + self.bias.tobytes()).hexdigest()[:8]

    def apply(self, conse_embeddings: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Corrected, normalized image embeddings."""
        return l2_normalize(conse_embeddings + logits @ self.weight + self.bias)

    def save(self, path: str | Path) -> Path:
        """Write the head as an .npz file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, weight=self.weight, bias=self.bias)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ProjectionHead:
        """Read a head written by `save`."""
        with np.load(path) as data:
            return cls(data["weight"].astype(np.float32), data["bias"].astype(np.float32))
