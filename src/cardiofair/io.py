"""File plumbing every stage shares: atomic writes, staging folders, strict JSON.

Nothing here knows about records, models or studies; it only makes sure that a crash (even
SIGKILL) leaves the old output or the new one, never half of one.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from cardiofair.errors import OutputExistsError


def atomic_write(path: str | os.PathLike, payload: bytes | str) -> Path:
    """Write a file through a temporary name and a rename: a crash (even SIGKILL) leaves the
    old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(payload.encode() if isinstance(payload, str) else payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def json_ready(value: Any) -> Any:
    """``value`` for strict JSON: NaN and infinities as None (read: undefined), numpy scalars
    and arrays as Python values."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


class StagingDirectory:
    """An output directory built under a hidden temporary name and renamed into place.

    An interrupted run leaves nothing half-written at ``out``: the rename is the last step, and
    an existing directory is replaced only with ``overwrite=True``.
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise OutputExistsError(f"{self.out} already exists; pass --overwrite to replace it")
        self.overwrite = overwrite
        self.tmp = self.out.parent / f".{self.out.name}.partial-{uuid.uuid4().hex[:8]}"

    def __enter__(self):
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()
        return self

    def commit(self) -> Path:
        """Move the finished directory into place (replacing the old one)."""
        if self.out.exists():
            trash = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out, trash)
            os.replace(self.tmp, self.out)
            shutil.rmtree(trash)
        else:
            os.replace(self.tmp, self.out)
        return self.out

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
