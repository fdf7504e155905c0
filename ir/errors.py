"""The one exception type users see (a message that names what is wrong and where), and what the tools share to
report on their work: one error line and exit 1, files written whole, progress bars."""

import os
import sys
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


def run_tool(tool: str, body) -> int:
    """A command-line tool's work, `body()` returning its exit status: any error is one line on
    stderr (`tool: error: ...`) and status 1, never a traceback (RUNG_TRACEBACK=1 shows one for a bug)."""
    try:
        return body()
    except RungError as e:
        message = str(e)
    except RecursionError:
        message = "the input nests too deeply (regions, brackets or calls) for Rung to follow"
    except Exception as e:  # a bug in Rung, not in the input: say so in one line
        if os.environ.get("RUNG_TRACEBACK"):
            raise
        message = f"internal error ({type(e).__name__}: {e}); rerun with RUNG_TRACEBACK=1 and report it"
    print(f"{tool}: error: {message}", file=sys.stderr)
    return 1


def progress_bar(items, total: int, unit: str):
    """`items` as they come, with a progress bar on a terminal for long work (tqdm, where installed; none otherwise)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, unit=f" {unit}", disable=None if total > 8 else True, leave=False)
