"""The sparse GEMM benchmark's CPU side: it times the scheduler's sparse kernels (ptxas assembles them with the other
benchmarks' schedules: test_bench_quant), and the words it packs stand for its weights."""

from __future__ import annotations

import numpy as np

from backend import bench_sparse
from ir.sparse import kernel_dense, kernel_tiles


def test_the_timed_kernels_are_sparse_ones_on_the_format_tile():
    schedules = bench_sparse.planned_schedules()
    assert len(schedules) >= len(bench_sparse.SHAPES) * len(bench_sparse.SPARSITIES)
    assert all(cfg.sparse and (cfg.bn, cfg.bk) == bench_sparse.TILE for cfg in schedules)


def test_the_packed_words_are_the_weight():
    w = bench_sparse.random_sparse(300, 200, 0.8, seed=3)
    assert 0.75 < (w == 0).mean() < 0.85
    cfg = bench_sparse.schedule(8, *w.shape, bench_sparse.fullest_tile(w))
    words = kernel_tiles(w, *bench_sparse.TILE, "f16", cfg.threads, cfg.sparse, bench_sparse.dense_tile_banks(*bench_sparse.TILE))
    np.testing.assert_array_equal(kernel_dense(words, *w.shape, *bench_sparse.TILE), w.astype(np.float64))
