"""The lane-level kernel simulator: a thread block at a time, every thread in lockstep.

A kernel's ops execute on numpy arrays over the block's threads (`op.execute(cta, *operands)`),
global memory as bounds-checked buffers (`DeviceMemory`), and shared memory that turns GPU
hazards into errors (`SharedMemory`: races, reads of pending cp.async bytes, wgmma's async
proxy). An op that holds a region runs it itself (`op.simulate(cta, env)`, calling `run_ops`).
It knows no dialect: the ptx dialect's ops carry their own meaning.
"""

from __future__ import annotations

import numpy as np
from xdsl.traits import IsTerminator

from ir.errors import RungError


class DeviceMemory:
    """Global memory for kernel interpretation: numpy buffers at distinct, aligned addresses."""

    BASE = 1 << 32

    def __init__(self):
        self.buffers: list[tuple[int, np.ndarray]] = []
        self._next = self.BASE

    def alloc(self, array: np.ndarray) -> int:
        """Copy `array` in; returns its address."""
        data = np.ascontiguousarray(array).view(np.uint8).reshape(-1).copy()
        addr = self._next
        self.buffers.append((addr, data))
        self._next += (data.size + 255) // 256 * 256 + 256  # a gap: overruns hit no buffer
        return addr

    def read(self, addr: int, like: np.ndarray) -> np.ndarray:
        for base, data in self.buffers:
            if base == addr:
                return data.view(like.dtype).reshape(like.shape).copy()
        raise KeyError(addr)

    def _locate(self, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(buffer index, offset) of each address; raises on addresses outside every buffer."""
        starts = np.array([b for b, _ in self.buffers], np.int64)
        which = np.searchsorted(starts, addrs, side="right") - 1
        sizes = np.array([d.size for _, d in self.buffers], np.int64)
        bad = (which < 0) | (addrs - starts[np.maximum(which, 0)] >= sizes[np.maximum(which, 0)])
        if bad.any():
            raise RungError(f"out-of-bounds global access at address {int(addrs[bad][0]):#x}")
        return which, addrs - starts[which]

    def gather(self, addrs: np.ndarray) -> np.ndarray:
        out = np.zeros(addrs.shape, np.uint8)
        if addrs.size:
            which, off = self._locate(addrs.reshape(-1))
            flat = out.reshape(-1)
            for i, (_, data) in enumerate(self.buffers):
                sel = which == i
                flat[sel] = data[off[sel]]
        return out

    def scatter(self, addrs: np.ndarray, values: np.ndarray) -> None:
        if addrs.size:
            which, off = self._locate(addrs.reshape(-1))
            for i, (_, data) in enumerate(self.buffers):
                sel = which == i
                data[off[sel]] = values.reshape(-1)[sel]


def _oldest(groups: list, newest_pending: int) -> list:
    """Remove and return the committed groups older than the `newest_pending` newest (a wait_group's completions)."""
    done = groups[: max(len(groups) - newest_pending, 0)]
    del groups[: len(done)]
    return done


class SharedMemory:
    """A thread block's shared memory, with the hazards a GPU would not forgive made errors:

    - a race: a byte written by one thread and read or written by another with no bar.sync between;
    - reading a byte that a cp.async has not completed (no cp.async.wait_group covering it yet).

    cp.async copies stay pending until a wait_group completes their group, so a pipeline that
    waits too little reads stale bytes on the CPU exactly as it would on the GPU.

    wgmma reads shared memory through the async proxy, so it also may not read a byte written
    (by a store or a completed cp.async) with no fence.proxy.async since, and its reads stay in
    flight until a wgmma.wait_group retires their group: writing such a byte is an error.
    """

    NONE, MANY = -1, -2

    def __init__(self, nbytes: int):
        self.data = np.zeros(nbytes, np.uint8)
        self.epoch = 0
        self.writer = np.full(nbytes, self.NONE, np.int64)
        self.write_epoch = np.full(nbytes, -1, np.int64)
        self.reader = np.full(nbytes, self.NONE, np.int64)
        self.read_epoch = np.full(nbytes, -1, np.int64)
        self.pending = np.zeros(nbytes, bool)
        self.open_group: list = []
        self.groups: list[list] = []
        self.async_visible = np.ones(nbytes, bool)  # written bytes the async proxy may read (fenced since)
        self.async_readers = np.zeros(nbytes, np.int32)  # in-flight wgmma reads of each byte
        self.open_reads: list = []
        self.read_groups: list[list] = []

    def _bounds(self, idx: np.ndarray) -> None:
        if idx.size and (idx.min() < 0 or idx.max() >= self.data.size):
            raise RungError(f"out-of-bounds shared access at offset {int(idx.max() if idx.max() >= self.data.size else idx.min())} "
                            f"(the block has {self.data.size} bytes)")

    def read(self, idx: np.ndarray, tids: np.ndarray) -> np.ndarray:
        """Bytes at `idx`, read by threads `tids` (same shape)."""
        self._bounds(idx)
        idx, tids = idx.reshape(-1), np.broadcast_to(tids, idx.shape).reshape(-1)
        if self.pending[idx].any():
            raise RungError(f"thread {int(tids[self.pending[idx]][0])} reads shared offset {int(idx[self.pending[idx]][0])} "
                            "before the cp.async that writes it completed (missing cp.async.wait_group?)")
        race = (self.write_epoch[idx] == self.epoch) & (self.writer[idx] != tids)
        if race.any():
            i = np.flatnonzero(race)[0]
            raise RungError(f"shared-memory race: thread {int(tids[i])} reads offset {int(idx[i])}, written by thread "
                            f"{int(self.writer[idx[i]])} since the last bar.sync")
        fresh = self.read_epoch[idx] != self.epoch
        prior = np.where(fresh, self.NONE, self.reader[idx])
        same = (prior == self.NONE) | (prior == tids)
        self.reader[idx] = np.where(same, tids, self.MANY)
        # several threads reading one byte in this access
        order = np.argsort(idx, kind="stable")
        dup = np.zeros(idx.size, bool)
        dup[order[1:]] = (idx[order[1:]] == idx[order[:-1]]) & (tids[order[1:]] != tids[order[:-1]])
        self.reader[idx[dup]] = self.MANY
        self.read_epoch[idx] = self.epoch
        return self.data[idx]

    def read_async(self, idx: np.ndarray) -> np.ndarray:
        """Bytes at `idx` read by a wgmma (the async proxy, for a whole warpgroup), in flight until
        a wgmma.wait_group retires the group it is committed in."""
        self._bounds(idx)
        flat = idx.reshape(-1)
        for bad, why in ((self.pending[flat], "before the cp.async that writes it completed (missing cp.async.wait_group?)"),
                         (~self.async_visible[flat], "written with no fence.proxy.async since (the async proxy may not see it)"),
                         (self.write_epoch[flat] == self.epoch, "written since the last bar.sync")):
            if bad.any():
                raise RungError(f"a wgmma reads shared offset {int(flat[bad][0])} {why}")
        self.reader[flat] = self.MANY
        self.read_epoch[flat] = self.epoch
        self.async_readers[flat] += 1
        self.open_reads.append(flat)
        return self.data[idx]

    def commit_reads(self) -> None:
        """wgmma.commit_group: the wgmma reads since the last commit form a group."""
        self.read_groups.append(self.open_reads)
        self.open_reads = []

    def retire_reads(self, newest_pending: int) -> None:
        """wgmma.wait_group n: every group but the n newest has finished reading."""
        for group in _oldest(self.read_groups, newest_pending):
            for flat in group:
                np.subtract.at(self.async_readers, flat, 1)

    def fence_async(self) -> None:
        """fence.proxy.async (by every thread): the bytes written so far become visible to wgmma."""
        self.async_visible[:] = True

    def _check_not_read_async(self, flat: np.ndarray, tids: np.ndarray) -> None:
        busy = self.async_readers[flat] > 0
        if busy.any():
            i = np.flatnonzero(busy)[0]
            raise RungError(f"thread {int(tids[i])} writes shared offset {int(flat[i])}, which an in-flight wgmma reads "
                            "(missing wgmma.wait_group?)")

    def write(self, idx: np.ndarray, values: np.ndarray, tids: np.ndarray) -> None:
        self._bounds(idx)
        idx, tids, values = idx.reshape(-1), np.broadcast_to(tids, idx.shape).reshape(-1), values.reshape(-1)
        self._check_not_read_async(idx, tids)
        waw = (self.write_epoch[idx] == self.epoch) & (self.writer[idx] != tids)
        war = (self.read_epoch[idx] == self.epoch) & (self.reader[idx] != self.NONE) & (self.reader[idx] != tids)
        for kind, bad in (("written", waw), ("read", war)):
            if bad.any():
                i = np.flatnonzero(bad)[0]
                other = self.writer[idx[i]] if kind == "written" else self.reader[idx[i]]
                who = "several threads" if other == self.MANY else f"thread {int(other)}"
                raise RungError(f"shared-memory race: thread {int(tids[i])} writes offset {int(idx[i])}, {kind} by {who} "
                                "since the last bar.sync")
        self.data[idx] = values
        self.writer[idx] = tids
        self.write_epoch[idx] = self.epoch
        self.async_visible[idx] = False

    def copy_async(self, idx: np.ndarray, values: np.ndarray, tids: np.ndarray) -> None:
        self._bounds(idx)
        self._check_not_read_async(idx.reshape(-1), np.broadcast_to(tids, idx.shape).reshape(-1))
        self.open_group.append((idx, values, np.broadcast_to(tids, idx.shape)))
        self.pending[idx.reshape(-1)] = True

    def commit(self) -> None:
        self.groups.append(self.open_group)
        self.open_group = []

    def wait(self, newest_pending: int) -> None:
        for group in _oldest(self.groups, newest_pending):
            for idx, values, tids in group:
                self.pending[idx.reshape(-1)] = False
                self.write(idx, values, tids)
        still = [c for g in self.groups for c in g] + self.open_group
        for idx, _, _ in still:
            self.pending[idx.reshape(-1)] = True

    def barrier(self) -> None:
        self.epoch += 1


class ThreadBlock:
    """The state of one thread block as the ptx ops' `execute` sees it."""

    def __init__(self, threads: int, ctaid: tuple[int, int, int], memory: DeviceMemory, shared_bytes: int,
                 grid: tuple[int, int, int] = (1, 1, 1)):
        self.threads, self.ctaid, self.grid, self.memory = threads, ctaid, grid, memory
        self.shared = SharedMemory(shared_bytes)
        self.tids = np.arange(threads)
        self.open_registers: list = []  # register operands of the wgmmas issued since the last commit
        self.register_groups: list[list] = []  # of the committed groups still in flight
        self.busy_registers: set = set()

    def read_registers_async(self, values) -> None:
        """Registers (SSA values) a wgmma reads until a wait_group retires its group: writing one
        before that is an error (_run_block checks)."""
        self.open_registers.extend(values)
        self.busy_registers.update(values)

    def commit_wgmma(self) -> None:
        """wgmma.commit_group: the reads of shared memory and registers since the last commit form a group."""
        self.shared.commit_reads()
        self.register_groups.append(self.open_registers)
        self.open_registers = []

    def retire_wgmma(self, newest_pending: int) -> None:
        """wgmma.wait_group n: every group but the n newest has finished reading."""
        self.shared.retire_reads(newest_pending)
        _oldest(self.register_groups, newest_pending)
        self.busy_registers = {v for group in self.register_groups for v in group} | set(self.open_registers)

    def check_writes(self, values) -> None:
        if self.busy_registers and not self.busy_registers.isdisjoint(values):
            raise RungError("a register an in-flight wgmma reads as its A operand is written (missing wgmma.wait_group, or "
                            "reuse of the register within the loop that issued the wgmma)")

    def special(self, name: str) -> np.ndarray:
        tid = np.arange(self.threads, dtype=np.uint32)
        values = {"tid.x": tid, "laneid": tid % 32, "ntid.x": np.full(self.threads, self.threads, np.uint32),
                  "ctaid.x": self.ctaid[0], "ctaid.y": self.ctaid[1], "ctaid.z": self.ctaid[2],
                  "nctaid.x": self.grid[0], "nctaid.y": self.grid[1], "nctaid.z": self.grid[2]}
        return np.broadcast_to(np.asarray(values[name], np.uint32), (self.threads,)).copy()

    def _bytes(self, addrs: np.ndarray, nbytes: int, pred, valid_bytes=None):
        idx = addrs[:, None] + np.arange(nbytes)
        active = np.ones(idx.shape, bool) if pred is None else np.broadcast_to(np.asarray(pred)[:, None], idx.shape)
        if valid_bytes is not None:
            active = active & (np.arange(nbytes) < np.asarray(valid_bytes)[:, None])
        tids = np.broadcast_to(self.tids[:, None], idx.shape)
        return idx, active, tids

    def load(self, space: str, addrs: np.ndarray, nbytes: int, pred, valid_bytes=None) -> np.ndarray:
        """Bytes at addrs[t] .. + nbytes. Bytes past `valid_bytes` read as zero (cp.async's zero
        fill); a thread whose predicate is off gets poison (0xFF bytes: NaN as a float), as the
        GPU leaves its register undefined."""
        idx, active, tids = self._bytes(addrs, nbytes, pred, valid_bytes)
        out = np.zeros(idx.shape, np.uint8)
        if pred is not None:
            out[~np.asarray(pred)] = 0xFF
        if space == "shared":
            out[active] = self.shared.read(idx[active], tids[active])
        else:
            out[active] = self.memory.gather(idx[active])
        return out

    def store(self, space: str, addrs: np.ndarray, data: np.ndarray, pred, asynchronous: bool = False) -> None:
        idx, active, tids = self._bytes(addrs, data.shape[1], pred)
        if space == "global":
            self.memory.scatter(idx[active], data[active])
        elif asynchronous:
            on = np.ones(len(addrs), bool) if pred is None else np.asarray(pred)
            self.shared.copy_async(idx[on], data[on], tids[on])
        else:
            self.shared.write(idx[active], data[active], tids[active])


def run_ops(block, env: dict, cta: ThreadBlock) -> None:
    """Execute a block's ops in order for every thread of `cta`, up to its terminator; `env` maps
    SSA values to per-thread arrays."""
    for op in block.ops:
        if op.has_trait(IsTerminator):
            return
        if hasattr(op, "simulate"):
            op.simulate(cta, env)
            continue
        outs = op.execute(cta, *(env[v] for v in op.operands))
        outs = outs if isinstance(outs, tuple) else (outs,)
        cta.check_writes(op.results)
        env.update(zip(op.results, outs))


def run_grid(block, threads: int, shared_bytes: int, grid: tuple[int, ...], params: dict, memory: DeviceMemory) -> None:
    """Run `block` (a kernel's body) once per thread block of `grid`; `params` maps its arguments
    to the value every thread starts with (a numpy scalar of the argument's type)."""
    gx, gy, gz = (*grid, 1, 1)[:3]
    with np.errstate(all="ignore"):
        for z in range(gz):
            for y in range(gy):
                for x in range(gx):
                    cta = ThreadBlock(threads, (x, y, z), memory, shared_bytes, (gx, gy, gz))
                    run_ops(block, {a: np.full(threads, p, type(p)) for a, p in params.items()}, cta)
