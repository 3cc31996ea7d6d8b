"""The base of errors a user can fix: the command line prints them in one line, no traceback."""


class CardiofairError(Exception):
    """A problem with the user's input, files or settings, explained in its message."""
