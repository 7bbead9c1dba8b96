"""The one error type of the data pipeline."""


class DatasetError(ValueError):
    """A bad dataset or data option: the message names the file or folder and the fix.

    Everything the data package refuses ends as this error, also when the refusal
    happens inside a DataLoader worker (the loader re-raises it in the main process
    with the original one-line message, see loader.py).
    """
