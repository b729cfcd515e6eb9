"""Fuzzing in the normal test run: hypothesis properties over the hostile-input decoders, and a
short bounded atheris run (libFuzzer, coverage-guided) of the same target."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from security.key_docs import make_revocation, make_rotation
from security.keys import NodeKey
from tests.fuzz.targets import check

ROOT = Path(__file__).resolve().parents[2]
_K1, _K2 = NodeKey.generate(), NodeKey.generate()
SEEDS = [
    make_rotation("330100", _K1, _K2, 1_800_000_000_000, 1000).doc,
    make_revocation("330000", _K1, "330100", _K2.kid, 1_800_000_000_000, "test").doc,
]


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_only_raise_domain_errors(data: bytes) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(seed=st.sampled_from(SEEDS), flips=st.lists(st.integers(0, 10_000), max_size=6))
def test_mutated_key_documents_only_raise_domain_errors(seed: bytes, flips: list[int]) -> None:
    data = bytearray(seed)
    for at in flips:
        data[at % len(data)] ^= 1 + at % 255
    check(bytes(data))


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_atheris_short_run(tmp_path: Path) -> None:
    """A bounded coverage-guided run (a few thousand inputs, at most ~20 s): must find nothing."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed{i}").write_bytes(seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.atheris_target",
            "-runs=4000",
            "-max_total_time=20",
            "-max_len=2048",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done" in result.stderr or "DONE" in result.stderr, result.stderr[-2000:]
