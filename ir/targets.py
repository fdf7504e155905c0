"""The GPU targets Rung emits PTX for, and the PTX ISA version its kernels are written in."""

from ir.errors import RungError

PTX_VERSION = "8.4"  # 8.4: mma.sync on e4m3 (sm_89 and later)
TARGETS = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_90a")
SMS = 132  # multiprocessors a schedule fills by default: an H100's (the launcher passes the device's own)
MAX_SHARED_BYTES = 227 * 1024  # per block on sm_90 (sm_80: 163 KiB; the launcher checks the device's)


def programmatic_launch(target: str) -> bool:
    """Whether kernels on `target` can be launched programmatically (sm_90 and later: griddepcontrol)."""
    return int(target.removeprefix("sm_").rstrip("a")) >= 90


def check_target(target: str, who: str = "") -> str:
    """`target` if Rung knows it, else a RungError (prefixed `who: `) listing the known ones."""
    if target not in TARGETS:
        raise RungError(f"{who + ': ' if who else ''}unknown target {target} (known: {', '.join(TARGETS)})")
    return target
