"""docs/gpu.md shows the files of docs/bench/ as they are, and bench_report puts a run there."""

import shutil

import pytest

from backend import bench_report


def test_the_gpu_page_shows_the_benchmark_files():
    page = bench_report.PAGE.read_text()
    assert bench_report.render(page) == page, "docs/gpu.md disagrees with docs/bench/: run python -m backend.bench_report RUN_DIR"


def _run(tmp_path, us: str):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    (run / "summary.md").write_text("# GPU run: GPU X, 2030-01-01\n\n| step | result |\n| --- | --- |\n| gpu tests | 3 passed |\n\n# GEMM\n...")
    (run / "bench_gemm.md").write_text(f"# GEMM\n\nGPU X, 2030-01-01.\n\n| M | us |\n| --- | --- |\n| 1 | {us} |\n")
    (run / "bench_quant.md").write_text(f"# Quant\n\n| M | us |\n| --- | --- |\n| 1 | {us} |\n\nSchedules tried beside:\n\n| a |\n")
    (run / "bench_sparse.md").write_text(f"# Sparse\n\n| sparsity | us |\n| --- | --- |\n| 80% | {us} |\n\nSchedules tried beside:\n\n| a |\n")
    (run / "bench_rows.md").write_text(f"# Rows\n\n| op | us |\n| --- | --- |\n| softmax | {us} |\n")
    (run / "bench_attention.md").write_text(f"# Attention\n\n| keys | us |\n| --- | --- |\n| 8192 | {us} |\n")
    (run / "bench_models.md").write_text(f"# Models\n\n| tokens | us |\n| --- | --- |\n| 512 | {us} |\n")
    (run / "bench_models_breakdown.md").write_text(f"# By kernel\n\n| kernel | us |\n| --- | --- |\n| rung_gemm | {us} |\n")
    (run / "bench_generate.md").write_text(f"# Generation\n\n| system | tokens/s |\n| --- | --- |\n| Rung | {us} |\n")
    for png in ("bench_gemm.png", "bench_quant.png", "bench_sparse.png"):
        (run / png).write_bytes(b"png")
    return run


@pytest.fixture
def docs(tmp_path, monkeypatch):
    """A copy of docs/gpu.md and an empty docs/bench/ that bench_report writes instead."""
    bench, page = tmp_path / "bench", tmp_path / "gpu.md"
    bench.mkdir()
    shutil.copyfile(bench_report.PAGE, page)
    monkeypatch.setattr(bench_report, "BENCH", bench)
    monkeypatch.setattr(bench_report, "PAGE", page)
    monkeypatch.setattr(bench_report.render, "__defaults__", (bench,))
    return bench, page


def test_a_run_replaces_each_section(tmp_path, docs):
    bench, page = docs
    for us in ("12.5", "7.25"):  # twice: the second run replaces the first, leaving nothing of it
        assert bench_report.main([str(_run(tmp_path / us, us))]) == 0
    text = page.read_text()
    assert "| 1 | 7.25 |" in text and "| softmax | 7.25 |" in text and "| 8192 | 7.25 |" in text and "| 512 | 7.25 |" in text and "| rung_gemm | 7.25 |" in text and "| Rung | 7.25 |" in text and "| 80% | 7.25 |" in text and "12.5" not in text
    assert "### GPU run: GPU X, 2030-01-01" in text and "Schedules tried" not in text  # titles demoted, tuning left in the file
    assert "# GEMM\n" in (bench / "bench_gemm.md").read_text() and (bench / "checks.md").read_text().count("|") == 9
    assert bench_report.render(text, bench) == text


def test_a_run_without_a_summary_is_one_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench_report.main([str(tmp_path)])
    assert e.value.code == 2 and "has no summary.md" in capsys.readouterr().err


def test_a_benchmark_the_run_skipped_keeps_its_table(tmp_path, docs, capsys):
    bench, page = docs
    assert bench_report.main([str(_run(tmp_path / "a", "12.5"))]) == 0
    second = _run(tmp_path / "b", "7.25")
    (second / "bench_models.md").unlink()
    assert bench_report.main([str(second)]) == 0
    text = page.read_text()
    assert "| softmax | 7.25 |" in text and "| 512 | 12.5 |" in text and "kept from earlier runs: bench_models.md" in capsys.readouterr().out
