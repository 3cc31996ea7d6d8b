"""The errors a user can fix: the command line prints them in one line, no traceback.

Every problem with the user's input, files or settings is a :class:`CardiofairError` (or a
subclass), and its message says what to change. Anything else that escapes a command is a bug
in cardiofair and is shown with its traceback. The subclasses that replace a built-in error
also derive from it (``SettingsError`` is a ``ValueError``), so code that caught the built-in
keeps working.

Kept free of heavy imports so the command line can catch them without loading numpy or torch.
"""

from __future__ import annotations

import os


class CardiofairError(Exception):
    """A problem with the user's input, files or settings, explained in its message."""


class SettingsError(CardiofairError, ValueError):
    """A setting out of its range or at odds with another. ``key`` names the setting (a field
    of a stage's settings) when one alone is at fault, so the command line can say ``--n`` and
    a study file ``prepare.n``."""

    def __init__(self, key: str | None, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"{key} {problem}" if key else problem)

    def __reduce__(self) -> tuple:
        # Rebuilt from its own arguments when a worker process hands it back (the message alone
        # does not fit __init__).
        return type(self), (self.key, self.problem)


class InputError(CardiofairError, ValueError):
    """An input (a dataset, a table, a file) that cannot be used as given."""


class MissingInputError(CardiofairError, FileNotFoundError):
    """An input that is not where the user said it is."""


class OutputExistsError(CardiofairError, FileExistsError):
    """The output exists and overwriting was not asked for."""


class SubjectError(Exception):
    """A problem with one subject's data: the subject is excluded, the run goes on."""

    def __init__(self, subject_id: str, file: str | os.PathLike | None, reason: str):
        self.subject_id = str(subject_id)
        self.file = "" if file is None else str(file)
        self.reason = reason
        where = f" ({self.file})" if self.file else ""
        super().__init__(f"{self.subject_id}{where}: {reason}")

    def __reduce__(self) -> tuple:
        # Workers of `prepare` return it to the main process (see SettingsError.__reduce__).
        return type(self), (self.subject_id, self.file or None, self.reason)

    def as_row(self) -> dict[str, str]:
        return {"subject_id": self.subject_id, "file": self.file, "reason": self.reason}
