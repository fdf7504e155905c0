"""The one exception type users see: a message that names what is wrong and where."""

from contextlib import contextmanager


class RungError(Exception):
    """A user-facing error; the CLIs print it as one line and exit 1."""


@contextmanager
def writing(path):
    """A failure to write `path` (a missing directory, no permission, a full disk) as a RungError naming it."""
    try:
        yield
    except OSError as e:
        raise RungError(f"cannot write {path}: {e.strerror or e}") from None
