"""Errors raised by the store: one line each, naming the file and the reason."""


class StoreError(RuntimeError):
    """A store is missing, damaged, locked, or of an unknown format."""
