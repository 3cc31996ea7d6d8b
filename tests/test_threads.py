import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from cardiofair.threads import THREAD_POLICY, WAIT_VARIABLES, apply_thread_policy, one_thread_per_worker
from thread_policy import policy_env, spin_counts


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


def _started_with(code: str, **variables: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], env=policy_env(**variables), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return spin_counts(result.stderr)


def test_torch_waits_as_the_policy_says_once_cardiofair_is_imported_first():
    assert _started_with("import cardiofair, torch") == [THREAD_POLICY["GOMP_SPINCOUNT"]]
    # Without cardiofair the runtime keeps its own default: the check can tell the two apart.
    assert _started_with("import torch") not in ([], [THREAD_POLICY["GOMP_SPINCOUNT"]])


@pytest.mark.parametrize("variable, value, spin_count", [("OMP_WAIT_POLICY", "ACTIVE", "30000000000"),
                                                         ("GOMP_SPINCOUNT", "300000", "300000"),
                                                         ("OMP_WAIT_POLICY", "PASSIVE", "0")])
def test_how_threads_wait_is_the_users_choice_when_they_set_it(variable, value, spin_count):
    assert _started_with("import cardiofair, torch", **{variable: value}) == [spin_count]
    # cardiofair adds nothing beside the user's choice.
    assert _started_with(f"from cardiofair.threads import apply_thread_policy as a; assert a() == {{{variable!r}: "
                         f"{value!r}}}", **{variable: value}) == []


def test_torch_imported_before_cardiofair_is_said(monkeypatch):
    # This process loaded torch already: the policy can no longer reach its runtime.
    for name in WAIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.warns(RuntimeWarning, match="torch was imported before cardiofair"):
        assert apply_thread_policy() == THREAD_POLICY
