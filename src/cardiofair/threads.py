"""How cardiofair uses the cores: a thread policy for sharing the machine, and work side by side,
one job per core (a batch in a part per thread, small networks in threads, process pools one
thread each).

On the CPU the generator's training step, its sampling and the judges' reading split each batch
into one part per torch thread (:func:`batch_parts`), each part on one thread. torch would
otherwise split every operation between its threads, which then meet at the end of each of
thousands of operations a step; beside a busy process a thread that waits there for a
descheduled sibling wastes its core. The parts meet once per step.

The thread policy (:data:`THREAD_POLICY`) is set when cardiofair is imported, before torch
loads, and every process cardiofair starts inherits it. It changes how an idle thread waits,
never how many threads there are or how work is split: the thread count stays torch's default
(one per core) or what the user sets (``OMP_NUM_THREADS``), never read from the machine's load.
The variables a user may set are in the README (Sharing the machine).

A small CNN keeps a core only partly busy, and torch's intra-op threads pay for themselves only
on large tensors: two trainings at once, each on one thread, finished two 3-epoch fairness
trainings in 3.8 s against 5.5 s one after the other on one thread, and 53 s on two threads
beside other work (2-core machine, CONTRIBUTING.md#threads). Each training's result depends on its own
seed and generator, so the figures do not depend on how many run at once.
"""

from __future__ import annotations

import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, TypeVar

if TYPE_CHECKING:
    import torch

Job = TypeVar("Job")
Result = TypeVar("Result")

# How torch's threads wait, read once by its OpenMP runtime (libgomp, which ATen, MKL and oneDNN
# share) when torch loads. By default a thread that reaches the end of a parallel region spins for
# about 3 ms (300,000 turns) waiting for its sibling; beside one busy process on 2 cores the
# sibling is often descheduled, and the generator's training step took 4.2 times its alone time
# (8.6 times on another host, issue 31). 2,000 turns (about 20 us here) still bridge the gap
# between two parallel regions of a step, so alone a step is as fast as before, and beside a busy
# process it took 2.3 times the alone time. Sleeping at once (OMP_WAIT_POLICY=PASSIVE) took 1.3
# times its alone time beside it, but a wake-up per region made the step 1.4 times slower alone
# (CONTRIBUTING.md#threads). How a thread waits never changes how work is split,
# so the figures stay the same.
THREAD_POLICY = {"GOMP_SPINCOUNT": "2000"}
# The variables by which a user chooses how libgomp waits; one set leaves the choice to them.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_thread_policy() -> dict[str, str]:
    """Set :data:`THREAD_POLICY` in this process's environment unless the user chose how threads
    wait (:data:`WAIT_VARIABLES`), before torch loads; child processes (accelerate's launcher,
    process pools, the app's server) inherit it. Returns the waiting variables in force.

    Runs when :mod:`cardiofair` is imported. If torch was imported first its runtime has read the
    environment already, so the policy cannot take effect in this process: that is said once."""
    if not any(name in os.environ for name in WAIT_VARIABLES):
        os.environ.update(THREAD_POLICY)
        if "torch" in sys.modules:
            warnings.warn("torch was imported before cardiofair, so " + " ".join(f"{k}={v}" for k, v in
                          THREAD_POLICY.items()) + " cannot take effect in this process: beside other busy "
                          "processes its training and sampling may run several times slower. Import cardiofair "
                          "first, or set it in the environment.", RuntimeWarning, stacklevel=3)
    return {name: os.environ[name] for name in WAIT_VARIABLES if name in os.environ}


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


def batch_parts(size: int, device: torch.device | str, threads: int | None = None) -> list[torch.Tensor]:
    """The rows of a batch of ``size`` split into one part per torch thread on the CPU (the cores,
    or ``OMP_NUM_THREADS``; ``threads`` when the caller read them before going to one thread), to
    run side by side with :func:`each_part`; one part on a GPU.

    torch splits each operation of a network between its threads, so its threads meet at the end
    of every one of a training step's thousands of operations; beside one busy process on 2 cores
    a sibling is often descheduled there, and the step took 2.3 times its alone time. A part per
    thread meets once per step (CONTRIBUTING.md#threads). The parts follow the thread count,
    which configuration fixes, never the machine's load; inside :func:`side_by_side` (one thread)
    a batch stays whole."""
    import torch

    parts = 1 if torch.device(device).type != "cpu" else max(1, min(threads or torch.get_num_threads(), size))
    return list(torch.arange(size).tensor_split(parts))


def each_part(work: Callable[[Job], Result], parts: list[Job], device: torch.device | str,
              threads: int | None = None) -> list[Result]:
    """``work`` of each part (:func:`batch_parts`), in order: on the CPU side by side in up to
    ``threads`` threads (default torch's count), one torch thread each (a lone part too, which
    would otherwise stall on every operation beside busy work); on a GPU one after the other."""
    import torch

    if torch.device(device).type != "cpu":
        return [work(part) for part in parts]
    return side_by_side(work, parts, workers=threads or torch.get_num_threads())


def in_batches(work: Callable[[torch.Tensor], Result], size: int, batch: int,
               device: torch.device | str = "cpu") -> list[Result]:
    """Inference: ``work`` of the rows of ``size`` inputs in batches of ``batch``, each batch in its
    parts (:func:`each_part`), in order, without gradients (a mode each thread holds for itself)."""
    import torch

    def infer(rows: torch.Tensor) -> Result:
        with torch.no_grad():
            return work(rows)

    return each_part(infer, [part + start for start in range(0, size, batch)
                             for part in batch_parts(min(batch, size - start), device)], device)
