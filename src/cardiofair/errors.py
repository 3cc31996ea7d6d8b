"""The errors a user can fix: the command line prints them in one line, no traceback.

Kept free of heavy imports so the command line can catch them without loading numpy or torch.
"""

from __future__ import annotations

import os


class CardiofairError(Exception):
    """A problem with the user's input, files or settings, explained in its message."""


class SubjectError(Exception):
    """A problem with one subject's data: the subject is excluded, the run goes on."""

    def __init__(self, subject_id: str, file: str | os.PathLike | None, reason: str):
        self.subject_id = str(subject_id)
        self.file = "" if file is None else str(file)
        self.reason = reason
        where = f" ({self.file})" if self.file else ""
        super().__init__(f"{self.subject_id}{where}: {reason}")

    def as_row(self) -> dict[str, str]:
        return {"subject_id": self.subject_id, "file": self.file, "reason": self.reason}
