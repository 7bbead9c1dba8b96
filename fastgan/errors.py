"""Exceptions as the one-line messages fastgan's command lines print."""


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of `error`'s message (at most `limit` characters), or its type's name
    when it has none: what a one-line error quotes of a cause from torch, pickle or gloo."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
