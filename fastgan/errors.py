"""Exceptions as the one-line messages fastgan's command lines print."""


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of `error`'s message (at most `limit` characters), or its type's name
    when it has none: what a one-line error quotes of a cause from torch, pickle or gloo."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def os_error_line(error: OSError) -> str:
    """An OSError as `path: reason` (a folder that cannot be made or written, a file gone)."""
    return f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)
