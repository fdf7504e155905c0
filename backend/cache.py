"""The on-disk kernel cache: PTX by content key, so that a stale entry can never load.

The key hashes Rung's version, the source of every module that can shape the PTX (all of ir/,
dialects/ and lowering/, and the printer), the target and the kernel's schedule. Entries are
written atomically; RUNG_CACHE_DIR moves the cache (default ~/.cache/rung), RUNG_CACHE=0
turns it off.
"""

from __future__ import annotations

import hashlib
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


def _sources() -> list[Path]:
    """Every module that can shape a kernel's PTX: whole packages, so a new module cannot be missed."""
    return sorted(p for pkg in ("ir", "dialects", "lowering") for p in (_ROOT / pkg).rglob("*.py")) + [_ROOT / "backend" / "ptx_text.py"]


@lru_cache(maxsize=None)
def source_digest() -> str:
    h = hashlib.sha256()
    for path in _sources():
        h.update(str(path.relative_to(_ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("RUNG_CACHE_DIR") or Path.home() / ".cache" / "rung")


def key(*parts: str) -> str:
    return hashlib.sha256("\0".join((RUNG_VERSION, source_digest(), *parts)).encode()).hexdigest()


def cached_text(parts: tuple[str, ...], make) -> tuple[str, bool]:
    """(text, hit): the cached text for `parts`, or make() written to the cache."""
    if os.environ.get("RUNG_CACHE") == "0":
        return make(), False
    path = cache_dir() / f"{key(*parts)}.ptx"
    if path.is_file():
        return path.read_text(), True
    text = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, path)
    return text, False
