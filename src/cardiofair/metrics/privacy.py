"""Memorisation checks: is a synthetic image a copy of a training patient?

A synthetic image counts as a copy when it lies closer to its nearest training image than
almost every real held-out patient does: closer than the 5th percentile of the test-to-train
nearest-neighbour distances. Real held-out patients measured against the same threshold give
the reference rate (about 5% by construction when they are not copies either).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

COPY_PERCENTILE = 5.0


def flatten_pixels(images: np.ndarray) -> np.ndarray:
    """(N, 2, H, W) images as (N, 2HW) vectors scaled so that distances are root-mean-square
    intensity differences, comparable across image sizes."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat / np.sqrt(flat.shape[1])


def nearest_neighbours(query: np.ndarray, reference: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest reference row, and that row's index."""
    if len(reference) == 0:
        raise ValueError("no reference images to measure distances against")
    reference_t = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    distances, indices = [], []
    with torch.no_grad():
        for i in range(0, len(query), chunk):
            block = torch.from_numpy(np.ascontiguousarray(query[i:i + chunk], dtype=np.float32))
            nearest = torch.cdist(block, reference_t).min(1)
            distances.append(nearest.values.double().numpy())
            indices.append(nearest.indices.numpy())
    if not distances:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(distances), np.concatenate(indices)


@dataclass
class CopyDetector:
    """The copy threshold of one feature space, from test-to-train nearest-neighbour distances."""

    threshold: float
    percentile: float = COPY_PERCENTILE

    @classmethod
    def fit(cls, test_to_train: np.ndarray, percentile: float = COPY_PERCENTILE) -> "CopyDetector":
        """Set the threshold at ``percentile`` of real test images' distances to the training set."""
        if len(test_to_train) == 0:
            raise ValueError("no real test images to set the copy threshold with")
        return cls(float(np.percentile(test_to_train, percentile)), percentile)

    def flags(self, distances: np.ndarray) -> np.ndarray:
        """Which images lie closer to the training set than the threshold."""
        return np.asarray(distances) < self.threshold

    def rate(self, distances: np.ndarray) -> float:
        """Fraction of images flagged as copies (NaN for an empty set)."""
        return float(self.flags(distances).mean()) if len(distances) else float("nan")
