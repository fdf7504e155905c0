"""Put a GPU run's results into the docs: docs/gpu.md shows the latest run only.

    python -m backend.bench_report RUN_DIR

RUN_DIR is the $OUT of `.ci/gpu` (summary.md, bench_gemm.md/.png, bench_quant.md/.png, bench_sparse.md/.png, bench_rows.md, bench_attention.md, bench_models.md, bench_models_breakdown.md, bench_generate.md). The files are
copied into docs/bench/, and each section of docs/gpu.md between `<!-- begin NAME -->` and
`<!-- end NAME -->` is replaced by its table (`SECTIONS`), so the page and the files cannot disagree
(tests/backend/test_bench_report.py checks it). A benchmark the run skipped keeps its last table, which
names its own device and date.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).parents[1]
BENCH = ROOT / "docs" / "bench"
PAGE = ROOT / "docs" / "gpu.md"
FILES = ("checks.md", "bench_gemm.md", "bench_gemm.png", "bench_quant.md", "bench_quant.png", "bench_sparse.md", "bench_sparse.png",
         "bench_rows.md", "bench_attention.md", "bench_models.md", "bench_models_breakdown.md", "bench_generate.md")


def _checks(summary: str) -> str:
    """The step table of .ci/gpu's summary, with its title line."""
    lines = summary.splitlines()
    end = next((i for i, line in enumerate(lines) if i > 2 and not line.startswith("|")), len(lines))
    return "\n".join(lines[:end]).strip() + "\n"


def _main_table(bench: str) -> str:
    """A benchmark file up to its list of the schedules tried (kept in the file alone)."""
    return bench.split("\nSchedules tried")[0].strip() + "\n"


SECTIONS = {"checks": ("checks.md", str), "bench_gemm": ("bench_gemm.md", str), "bench_quant": ("bench_quant.md", _main_table),
            "bench_sparse": ("bench_sparse.md", _main_table),
            "bench_rows": ("bench_rows.md", str), "bench_attention": ("bench_attention.md", str), "bench_models": ("bench_models.md", str),
            "bench_models_breakdown": ("bench_models_breakdown.md", str), "bench_generate": ("bench_generate.md", str)}


def render(page: str, bench: Path = BENCH) -> str:
    """The page with every section replaced by what the files in `bench` hold."""
    for name, (file, pick) in SECTIONS.items():
        body = re.sub(r"^# ", "### ", pick((bench / file).read_text()).strip(), flags=re.M)  # titles under the page's own
        pattern = re.compile(rf"(<!-- begin {name} -->\n).*?(<!-- end {name} -->)", re.S)
        if not pattern.search(page):
            raise ValueError(f"{PAGE.name} has no '<!-- begin {name} -->' ... '<!-- end {name} -->' section")
        page = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), page)
    return page


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend.bench_report", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="the $OUT folder of a .ci/gpu run")
    args = p.parse_args(argv)
    if not (args.run_dir / "summary.md").is_file():
        p.error(f"{args.run_dir} has no summary.md: give the $OUT folder of a .ci/gpu run")
    (BENCH / "checks.md").write_text(_checks((args.run_dir / "summary.md").read_text()))
    taken = [f for f in FILES[1:] if (args.run_dir / f).is_file()]  # a benchmark the run skipped keeps its last table
    for f in taken:
        shutil.copyfile(args.run_dir / f, BENCH / f)
    try:
        PAGE.write_text(render(PAGE.read_text()))
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    kept = [f for f in FILES[1:] if f not in taken]
    print(f"{BENCH} and {PAGE} now show the run in {args.run_dir}" + (f" (kept from earlier runs: {', '.join(kept)})" if kept else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
