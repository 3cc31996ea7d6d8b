"""The benchmarks are scripts no test runs (speed is not asserted), so a broken one would go
unnoticed until someone needs its figures: each must at least compile."""

from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.py"))


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 5


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.name)
def test_benchmark_compiles(script):
    compile(script.read_text(), str(script), "exec")
