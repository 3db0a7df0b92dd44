"""Errors a user can fix; the CLI prints them as one line and exits non-zero."""

# What an error quotes of a value it was given: enough to recognise it, never a 100 KB line.
ECHO_LIMIT = 120


class EdgecompressError(Exception):
    """Base class: bad input or environment, explained in the message."""


class ParamsError(EdgecompressError):
    """params.yaml or a -S override is invalid."""


class DataError(EdgecompressError):
    """The dataset is missing, empty or unreadable."""


class StageError(EdgecompressError):
    """A stage cannot run with what it was given."""


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """repr(value) for an error message, cut with an ellipsis (and the full length) when it is long."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str | bytes) else ""
    return f"{text[:limit]}…{size}"


def clip(text: object, limit: int = ECHO_LIMIT) -> str:
    """str(text) for an error message (a path, a URL), cut with an ellipsis when it is long."""
    shown = str(text)
    return shown if len(shown) <= limit else f"{shown[:limit]}… ({len(shown)} characters)"


def bounded(message: str, limit: int = 1000) -> str:
    """The message whole, or its start and end around an ellipsis: what one error line may print."""
    if len(message) <= limit:
        return message
    tail = limit // 3
    return f"{message[: limit - tail]} … {message[-tail:]}"


# The file system refusing a write: no space left, a quota, or a file-size limit (ulimit -f).
_NO_ROOM = ("ENOSPC", "EDQUOT", "EFBIG")
_NO_ROOM_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")


def no_room(error: BaseException) -> bool:
    """Whether `error` is a write the file system refused for lack of room.

    An OSError says so by its errno; TensorFlow's and h5py's own errors carry the operating
    system's text instead.
    """
    import errno

    if isinstance(error, OSError) and error.errno in {getattr(errno, name) for name in _NO_ROOM}:
        return True
    return any(text in str(error) for text in _NO_ROOM_TEXT)


def no_room_error(error: BaseException, doing: str = "") -> EdgecompressError:
    """The one line for a write refused for lack of room: while `doing` what, or else the file it was writing."""
    where = getattr(error, "filename", None)
    what = f" {doing}" if doing else f" (writing {where})" if where else ""
    return EdgecompressError(f"no room left on the disk{what}; free some space and run again")
