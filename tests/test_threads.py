from concurrent.futures import ProcessPoolExecutor

import torch
from threadpoolctl import threadpool_info, threadpool_limits

from cardiofair.threads import one_thread_per_worker


def _threads_in_worker() -> tuple[int, int]:
    return max(pool["num_threads"] for pool in threadpool_info()), torch.get_num_threads()


def test_pool_workers_run_blas_and_torch_on_one_thread():
    # The parent as a stage leaves it: torch loaded, BLAS and torch on two threads. Two workers
    # that each kept two threads would oversubscribe two cores (the fairness group tables: 1.7x).
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threadpool_limits(2), ProcessPoolExecutor(2, initializer=one_thread_per_worker) as pool:
            assert pool.submit(_threads_in_worker).result() == (1, 1)
    finally:
        torch.set_num_threads(before)
