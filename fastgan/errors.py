"""Exceptions as the one-line messages fastgan's command lines print."""

import contextlib
import os


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of `error`'s message, or its type's name when it has none: what a
    one-line error quotes of a cause from torch, pickle or gloo. Past `limit` characters it
    ends with the last sentence that fits, else at a word, with "..."."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    if len(line) <= limit:
        return line
    sentence = line.rfind(". ", 0, limit)
    if sentence >= limit // 2:  # (a short first sentence, or an "e.g.", says too little)
        return line[:sentence + 1]
    word = line.rfind(" ", 0, limit - 4)
    return line[:word if word > 0 else limit - 4] + " ..."


def os_error_line(error: OSError) -> str:
    """An OSError as `path: reason` (a folder that cannot be made or written, a file gone)."""
    return f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)


def folder_problem(path: str) -> str | None:
    """Why `path` cannot be made or written as a folder, in a few words (a file in the way, a
    folder without write permission, a read-only file system), or None; nothing is made."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)  # the nearest part of the path that exists, which would hold the rest
    if os.path.islink(probe) and not os.path.exists(probe):
        return f"{probe} is a link to nothing"
    if not os.path.isdir(probe):
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} cannot be written (permissions, or a read-only file system)"
    return None


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
