"""The on-disk kernel cache: PTX by content key, so that a stale entry can never load.

The key hashes Rung's version, the source of every module of Rung's packages (found, not
listed: a new module or a change anywhere makes new keys), the target and the kernel's schedule.
An entry holds the hash of its text and is refused, and rebuilt, when the two disagree (a
truncated, emptied or overwritten file). Entries are written atomically; RUNG_CACHE_DIR moves
the cache (default ~/.cache/rung), RUNG_CACHE=0 turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    RUNG_VERSION = version("rung")
except PackageNotFoundError:  # a source tree that was never installed
    RUNG_VERSION = "dev"

_ROOT = Path(__file__).parents[1]
log = logging.getLogger("rung")


def _sources() -> list[Path]:
    """Every module of Rung's packages (the folders beside this one with an __init__.py): whatever can
    shape a kernel's PTX, including what chooses schedules and launches, without a list to keep."""
    return sorted(p for pkg in _ROOT.iterdir() if (pkg / "__init__.py").is_file() for p in pkg.rglob("*.py"))


@lru_cache(maxsize=None)
def source_digest() -> str:
    h = hashlib.sha256()
    for path in _sources():
        h.update(str(path.relative_to(_ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("RUNG_CACHE_DIR") or Path.home() / ".cache" / "rung")


def key(*parts: str) -> str:
    from ir.numerics import defined_formats_digest

    return hashlib.sha256("\0".join((RUNG_VERSION, source_digest(), defined_formats_digest(), *parts)).encode()).hexdigest()


def cached_text(parts: tuple[str, ...], make) -> tuple[str, bool]:
    """(text, hit): the cached text for `parts`, or make() written to the cache."""
    if os.environ.get("RUNG_CACHE") == "0":
        return make(), False
    path = cache_dir() / f"{key(*parts)}.ptx"
    if path.is_file():
        digest, _, text = path.read_text(errors="replace").partition("\n")
        if digest == _digest(text):
            return text, True
        log.warning("kernel cache entry %s does not match its hash: rebuilt", path.name)
    text = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(f"{_digest(text)}\n{text}")
    os.replace(f.name, path)
    return text, False


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
