"""The float format the generator computes in.

Weights, optimiser state and the loss stay in float32; under bfloat16 autocast the matrix
products and convolutions of each forward pass (and so their backward) run in bfloat16. On a CPU
whose cores multiply bfloat16 in hardware (AVX512-BF16 or AMX) that makes the default
generator's training 1.3x faster, its images as close to real over three training seeds
(docs/measurements.md); on one that does not, oneDNN emulates it and a UNet forward is 27x
slower (../shared/notes/diffusion-on-this-cpu.md). ``auto`` therefore asks the hardware, and the run
records what it used: a model trained in another format is another model, as one trained on
another CPU kind is (other float rounding).
"""

from __future__ import annotations

import contextlib

import torch

AUTO = "auto"
MIXED_PRECISIONS = ("no", "fp16", "bf16", AUTO)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX tiles."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(mixed_precision: str, device: torch.device | str) -> str:
    """The format a run on ``device`` computes in (``no``, ``fp16`` or ``bf16``): ``auto`` is
    ``bf16`` where :func:`native_bf16`, else ``no``; on a CPU ``fp16`` is ``no`` (no CPU here
    multiplies it in hardware) and ``bf16`` is honoured as asked."""
    if mixed_precision == AUTO:
        return "bf16" if native_bf16(device) else "no"
    if torch.device(device).type == "cpu" and mixed_precision == "fp16":
        return "no"
    return mixed_precision


def autocast(mixed_precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast to ``mixed_precision`` as :func:`resolve_precision` resolves it on ``device``
    (nothing for float32). Autocast is a mode each thread holds for itself: every thread that
    computes a part of a batch enters it."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision(mixed_precision, device))
    return contextlib.nullcontext() if dtype is None else torch.autocast(torch.device(device).type, dtype=dtype)
