"""Throughput of the data layer: phantom subjects/s and prepare subjects/s.

Prints figures; it is not a test. Run: python benchmarks/bench_data.py [--n 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cardiofair.data.phantom import PhantomConfig, phantom_subject
from cardiofair.data.phantom_export import UKBB_SHAPE, write_phantom_ukbb
from cardiofair.data.prepare import PrepareSettings, prepare_phantom, prepare_sources
from cardiofair.data.sources import discover


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f} subjects/s  ({n} in {seconds:.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="phantom subjects")
    parser.add_argument("--n-real", type=int, default=200, help="subjects in the UK Biobank-format fixture cohort")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores")

    config = PhantomConfig()
    start = time.perf_counter()
    for index in range(args.n):
        phantom_subject(index, 0, config)
    print(f"phantom generation, 64 px, one core:          {_rate(args.n, time.perf_counter() - start)}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for workers in (1, os.cpu_count() or 1):
            start = time.perf_counter()
            prepare_phantom(args.n, 0, tmp / f"phantom-{workers}", workers=workers, progress=False)
            print(f"prepare --source phantom, {workers} worker(s):       "
                  f"{_rate(args.n, time.perf_counter() - start)}  (with NIfTI + PNG writing)")

        start = time.perf_counter()
        metadata = write_phantom_ukbb(tmp / "ukbb", args.n_real, seed=0)
        print(f"fixture: {args.n_real} UK Biobank-format subjects, {UKBB_SHAPE[0]}x{UKBB_SHAPE[1]}x10 int16, "
              f"written in {time.perf_counter() - start:.1f} s")
        columns = {"height_cm": "height", "weight_kg": "weight"}
        for workers in (1, os.cpu_count() or 1):
            start = time.perf_counter()
            sources = discover("ukbb", tmp / "ukbb", metadata=metadata, columns=columns)
            result = prepare_sources(sources, tmp / f"ukbb-{workers}", PrepareSettings(), {"source": "ukbb"},
                                     workers=workers, progress=False)
            assert result.n_subjects == args.n_real, result.excluded[:3]
            print(f"prepare --source ukbb, {workers} worker(s):          "
                  f"{_rate(args.n_real, time.perf_counter() - start)}")


if __name__ == "__main__":
    main()
