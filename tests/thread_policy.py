"""Reading which wait policy a process's OpenMP runtime took, for the tests of the thread policy
(cardiofair.threads.THREAD_POLICY) in each kind of process cardiofair starts."""

import os
import re

from cardiofair.threads import WAIT_VARIABLES


def spin_counts(output: str) -> list[str]:
    """The spin count each OpenMP runtime in ``output`` read at start (``OMP_DISPLAY_ENV=VERBOSE``):
    how long an idle thread spins before it sleeps (0: at once). libgomp names the policy PASSIVE
    when it is unset too, so the spin count is the one reading that tells them apart."""
    return re.findall(r"GOMP_SPINCOUNT = '(\d+)'", output)


def policy_env(**variables: str) -> dict[str, str]:
    """This environment without any waiting variable (the test process has the policy's from cardiofair), the
    OpenMP runtime asked to print what it read, and ``variables``."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    return {**env, "OMP_DISPLAY_ENV": "VERBOSE", **variables}
