"""The one error the Edge TPU tools raise."""

from tasks.errors import EdgecompressError


class EdgeTPUError(EdgecompressError):
    """A model the Edge TPU tools cannot read, or an edgetpu_compiler run that failed."""
