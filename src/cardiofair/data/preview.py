"""Pictures of records: an image with its mask tinted, and PNG encoding. For looking, not
measuring: previews, validation grids, closest pairs and report figures all draw with these."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

LABEL_COLOURS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 80], [70, 120, 240]], dtype=np.uint8)


def mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 picture of a [0, 1] image with its labels tinted (LV red, myocardium
    green, RV blue)."""
    grey = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    labelled = mask > 0
    rgb[labelled] = (0.5 * rgb[labelled] + 0.5 * LABEL_COLOURS[mask[labelled]]).astype(np.uint8)
    return rgb


def png_bytes(picture: np.ndarray) -> bytes:
    """PNG encoding of an (H, W) or (H, W, 3) uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def preview_picture(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """ED | ES on top, the same with the masks tinted below, as one RGB picture."""
    plain = [mask_overlay(image[f], np.zeros_like(mask[f])) for f in range(len(image))]
    tinted = [mask_overlay(image[f], mask[f]) for f in range(len(image))]
    return np.concatenate([np.concatenate(plain, axis=1), np.concatenate(tinted, axis=1)], axis=0)


def preview_png(image: np.ndarray, mask: np.ndarray) -> bytes:
    """A record's preview: a quick look, not a measurement."""
    return png_bytes(preview_picture(image, mask))
