"""Errors a user can fix; the CLI prints them as one line and exits non-zero."""


class EdgecompressError(Exception):
    """Base class: bad input or environment, explained in the message."""


class ParamsError(EdgecompressError):
    """params.yaml or a -S override is invalid."""


class DataError(EdgecompressError):
    """The dataset is missing, empty or unreadable."""


class StageError(EdgecompressError):
    """A stage cannot run with what it was given."""
