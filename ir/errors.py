"""The one exception type users see: a message that names what is wrong and where."""


class RungError(Exception):
    """A user-facing error; the CLIs print it as one line and exit 1."""
