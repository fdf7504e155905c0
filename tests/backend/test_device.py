"""backend.device: what a device says when a program does not fit on it."""

import pytest

torch = pytest.importorskip("torch")

from backend.device import CudaDevice  # noqa: E402
from ir.errors import RungError  # noqa: E402


def test_a_program_that_does_not_fit_says_how_much_it_needs(monkeypatch):
    """torch's allocator refuses the arena: one error with the bytes needed and those free (the driver faked)."""
    device = object.__new__(CudaDevice)  # (no driver here: only the allocation path is under test)
    device.ordinal = 0

    def refuse(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch, "empty", refuse)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda ordinal: (3 * 2**20, 80 * 2**30))
    with pytest.raises(RungError, match=r"needs 64\.0 MiB more on GPU 0 \(\[16777216\] uint32: .*3\.0 MiB of 81920 MiB are free"):
        device.empty([16777216], "uint32")
