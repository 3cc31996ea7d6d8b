"""Training checkpoints: safetensors and JSON only (pickle runs code), written atomically.

A checkpoint is a folder ``step-NNNNNN`` holding each model as a ``save_pretrained`` folder,
the optimizer and EMA tensors as safetensors, and the rest of the training state as JSON. It
is written under a temporary name and renamed when complete; the file ``latest`` then names
it. A crash (even SIGKILL) during a write leaves the previous checkpoint and ``latest`` intact.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from cardiofair.errors import CardiofairError
from cardiofair.io import atomic_write

LATEST = "latest"


class CheckpointError(CardiofairError):
    """A checkpoint that cannot be resumed from."""


def flatten_state(state: Any, tensors: dict[str, torch.Tensor] | None = None, prefix: str = "s") -> tuple[Any, dict]:
    """Split a nested state (dicts, lists, tensors, numbers) into a JSON skeleton and tensors."""
    tensors = {} if tensors is None else tensors
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state.detach().cpu().contiguous()
        return {"__tensor__": prefix}, tensors
    if isinstance(state, dict):
        items = [[key, flatten_state(value, tensors, f"{prefix}.{key}")[0]] for key, value in state.items()]
        return {"__dict__": items}, tensors
    if isinstance(state, (list, tuple)):
        return [flatten_state(value, tensors, f"{prefix}.{i}")[0] for i, value in enumerate(state)], tensors
    if state is None or isinstance(state, (bool, int, float, str)):
        return state, tensors
    raise TypeError(f"cannot store a {type(state).__name__} in a checkpoint")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {key: unflatten_state(value, tensors) for key, value in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(value, tensors) for value in skeleton]
    return skeleton


def save_state(folder: Path, name: str, state: Any) -> None:
    """Write a nested state as ``name.json`` plus ``name.safetensors``."""
    skeleton, tensors = flatten_state(state)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton))


def load_state(folder: Path, name: str) -> Any:
    """Read a state written by :func:`save_state`."""
    skeleton = json.loads((folder / f"{name}.json").read_text())
    return unflatten_state(skeleton, load_file(str(folder / f"{name}.safetensors")))


def write_checkpoint(root: Path, step: int, write: Callable[[Path], None], keep: int = 2) -> Path:
    """Create ``root/step-NNNNNN`` by calling ``write(folder)`` on a temporary folder, rename it
    into place, point ``latest`` at it, and delete all but the ``keep`` newest checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
    tmp.mkdir()
    try:
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    atomic_write(root / LATEST, final.name + "\n")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path:
    """The checkpoint ``latest`` names, with a clear error when there is none or it is gone."""
    pointer = root / LATEST
    if not pointer.is_file():
        raise CheckpointError(f"no checkpoint to resume from in {root}")
    folder = root / pointer.read_text().strip()
    if not folder.is_dir():
        raise CheckpointError(f"{pointer} names {folder.name}, which does not exist")
    return folder
