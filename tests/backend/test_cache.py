"""The on-disk PTX cache: content-keyed, verified on load, atomic, and off with RUNG_CACHE=0."""

from pathlib import Path

from backend.cache import cache_dir, cached_text, key
from backend.gemm import gemm_ptx
from dialects.tile import GemmConfig


def test_second_build_is_a_hit_and_keys_follow_the_content():
    calls = []

    def make():
        calls.append(1)
        return "ptx text"

    assert cached_text(("sm_80", "cfg"), make) == ("ptx text", False)
    assert cached_text(("sm_80", "cfg"), make) == ("ptx text", True)
    assert len(calls) == 1
    assert key("sm_80", "a") != key("sm_90a", "a") != key("sm_80", "b")
    assert len(list(cache_dir().glob("*.ptx"))) == 1


def test_gemm_ptx_is_cached_per_target_and_schedule():
    cfg = GemmConfig("f16", bm=32, bn=32, bk=32, warps_m=1, warps_n=1, stages=2)
    a, b = gemm_ptx(cfg, "sm_80"), gemm_ptx(cfg, "sm_90a")
    assert ".target sm_80" in a and ".target sm_90a" in b
    assert gemm_ptx(cfg, "sm_80") == a
    assert len(list(cache_dir().glob("*.ptx"))) == 2


def test_cache_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("RUNG_CACHE", "0")
    assert cached_text(("x",), lambda: "t") == ("t", False)
    assert not cache_dir().exists()


def test_the_key_covers_every_module_that_shapes_ptx():
    from backend.cache import _sources

    root = Path(__file__).parents[2]
    names = {str(p.relative_to(root)) for p in _sources()}
    assert {"lowering/ladder.py", "lowering/tile_to_warp/block.py", "dialects/ptx/mma.py", "ir/packing.py", "ir/layout.py",
            "backend/ptx_text.py", "backend/gemm.py", "lowering/graph_to_tile.py"} <= names
    assert not any(n.startswith(("tests/", "examples/")) for n in names)


def test_a_tampered_entry_is_refused_and_rebuilt():
    calls = []

    def make():
        calls.append(1)
        return ".version 8.4\n.entry k"

    cached_text(("sm_80", "t"), make)
    (entry,) = cache_dir().glob("*.ptx")
    for bad in ("", "not the kernel", entry.read_text().replace(".entry k", ".entry x")):
        entry.write_text(bad)
        assert cached_text(("sm_80", "t"), make) == (".version 8.4\n.entry k", False)  # rebuilt, not loaded
        assert cached_text(("sm_80", "t"), make) == (".version 8.4\n.entry k", True)  # and written back whole
    assert len(calls) == 4
