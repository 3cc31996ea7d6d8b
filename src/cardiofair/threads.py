"""Work side by side, one job per core: small networks in threads, process pools one thread each.

A small CNN keeps a core only partly busy, and torch's intra-op threads pay for themselves only
on large tensors: two trainings at once, each on one thread, finished two 3-epoch fairness
trainings in 3.8 s against 5.5 s one after the other on one thread, and 53 s on two threads
beside other work (2-core machine, DEVELOPERS.md). Each training's result depends on its own
seed and generator, so the figures do not depend on how many run at once.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


@contextmanager
def one_thread_each() -> Iterator[None]:
    """torch on one intra-op thread for the duration (the work runs side by side instead)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread_per_worker() -> None:
    """Initializer of a process pool that runs one worker per core: numpy's BLAS and torch on one
    thread in each worker. Left at their default (a thread per core in every worker), two
    workers on two cores computed the fairness stage's group tables in 22.5 s instead of 13.3 s
    (the same figures). torch is limited only where the parent had loaded it: importing it would
    cost each worker a second or two."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def side_by_side(work: Callable[[Job], Result], jobs: Iterable[Job], workers: int | None = None) -> list[Result]:
    """``work`` of every job, in order, run in up to ``workers`` threads (default: one per core,
    at most 8), torch on one thread each."""
    jobs = list(jobs)
    workers = max(1, min(workers or os.cpu_count() or 1, 8, len(jobs) or 1))
    with one_thread_each(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(work, jobs))
