"""The machine code ptxas makes of a PTX module, for tests that check what the GPU will run."""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path


def nvdisasm() -> str | None:
    """The nvdisasm of the nvidia-cuda-nvdisasm wheel (the test extra), or one on PATH."""
    spec = importlib.util.find_spec("nvidia")
    found = [p for d in (spec.submodule_search_locations if spec else []) for p in Path(d).glob("cu*/bin/nvdisasm")]
    return str(found[0]) if found else shutil.which("nvdisasm")


def sass(ptx: str, arch: str, tmp_path: Path) -> list[str]:
    """The instructions (without their addresses and ';') of `ptx` assembled for `arch`."""
    src = tmp_path / "k.ptx"
    src.write_text(ptx)
    subprocess.run(["ptxas", f"-arch={arch}", str(src), "-o", str(tmp_path / "k.cubin")], check=True)
    text = subprocess.run([nvdisasm(), "-c", str(tmp_path / "k.cubin")], capture_output=True, text=True, check=True).stdout
    return [m.group(1) for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", text)]


sass_tools_missing = shutil.which("ptxas") is None or nvdisasm() is None


def assert_assembles_without_spills(ptx: str, arch: str, tmp_path: Path) -> str:
    """ptxas -v assembles `ptx` for `arch` with no spills in any of its kernels and no wgmma serialized; its report."""
    src = tmp_path / "k.ptx"
    src.write_text(ptx)
    out = subprocess.run(["ptxas", f"-arch={arch}", "-v", str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out.stderr)
    assert spills and all(s == ("0", "0") for s in spills), out.stderr  # every kernel of the module
    assert "serialized" not in out.stderr, out.stderr  # (wgmmas made to wait for each other)
    return out.stderr
