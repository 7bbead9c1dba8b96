"""Exceptions as the one-line messages fastgan's command lines print."""

import contextlib
import os


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of `error`'s message (at most `limit` characters), or its type's name
    when it has none: what a one-line error quotes of a cause from torch, pickle or gloo."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def os_error_line(error: OSError) -> str:
    """An OSError as `path: reason` (a folder that cannot be made or written, a file gone)."""
    return f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)


def replace_file(written: str, path: str) -> None:
    """os.replace(written, path) of a file written beside `path`; its failure (`path` is a
    folder, say) names `path`, not the temporary file the user never made."""
    try:
        os.replace(written, path)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from e


@contextlib.contextmanager
def naming(path: str):
    """An OSError raised in the block without a file name (a write that finds the disk full:
    "[Errno 28] No space left on device") re-raised naming `path`."""
    try:
        yield
    except OSError as e:
        if e.filename or not e.strerror:
            raise
        raise OSError(e.errno, e.strerror, path) from e
