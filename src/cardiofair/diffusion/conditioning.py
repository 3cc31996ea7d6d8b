"""The ControlNet's conditioning image, derived from a record's (ED, ES) mask pair."""

from __future__ import annotations

import torch

CONDITION_MODES = ("onehot", "grey", "grey-rgb")
N_LABELS = 3  # LV blood pool, LV myocardium, RV blood pool; background is implicit


def condition_channels(mode: str) -> int:
    """Number of channels of the conditioning image for a mode."""
    if mode == "onehot":
        return 2 * N_LABELS
    if mode == "grey":
        return 2
    if mode == "grey-rgb":
        return 3
    raise ValueError(f"unknown condition mode {mode!r}; choose from {CONDITION_MODES}")


def mask_condition(masks: torch.Tensor, mode: str = "onehot") -> torch.Tensor:
    """(B, 2, H, W) integer masks -> (B, C, H, W) float conditioning image in [0, 1].

    ``onehot``: one channel per label per frame (ED labels 1-3, then ES), which keeps the
    structures apart for the network. ``grey``: each frame's labels as grey levels (label / 3),
    the paper's encoding of the mask as an image; ``grey-rgb``: the grey levels stacked as
    (ED, ES, ED), an RGB image for Stable Diffusion's ControlNet, as in the paper.
    """
    if masks.ndim != 4 or masks.shape[1] != 2:
        raise ValueError(f"masks must have shape (B, 2, H, W), got {tuple(masks.shape)}")
    if mode == "grey":
        return masks.float() / N_LABELS
    if mode == "grey-rgb":
        return masks[:, [0, 1, 0]].float() / N_LABELS
    if mode == "onehot":
        labels = torch.arange(1, N_LABELS + 1, device=masks.device).view(1, 1, N_LABELS, 1, 1)
        onehot = (masks.long().unsqueeze(2) == labels).float()
        return onehot.flatten(1, 2)
    raise ValueError(f"unknown condition mode {mode!r}; choose from {CONDITION_MODES}")

def control_image(masks: torch.Tensor, mode: str = "onehot", unshuffle: int = 1) -> torch.Tensor:
    """The ControlNet's input: :func:`mask_condition`, folded ``unshuffle`` x ``unshuffle`` into
    channels when the UNet works on folded pixels. A folded mask reaches the UNet's resolution
    without the ControlNet's strided embedding, which costs most of its compute at full
    resolution and blurs the thin myocardium before the UNet sees it."""
    condition = mask_condition(masks, mode)
    return torch.nn.functional.pixel_unshuffle(condition, unshuffle) if unshuffle > 1 else condition


def join_mask(sample: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """The noisy sample with the folded mask as extra channels, for a UNet that reads the mask in
    its input as well as through the ControlNet: each 4x4 block's labels then sit beside the
    pixels they outline from the first convolution on, not a few zero-initialised residuals away."""
    return torch.cat([sample, condition.to(sample.dtype)], dim=1)
