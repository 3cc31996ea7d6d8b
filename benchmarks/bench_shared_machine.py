"""How cardiofair shares a machine: each computing stage at toy size, alone and beside one busy
single-threaded process, in one run, with the ratio of the two times.

    python benchmarks/bench_shared_machine.py [--steps 40] [--subjects 400] [--pairs 10]

Everything runs as a user runs it, each in a fresh process that imported cardiofair first (so
under its thread policy, `cardiofair.threads.THREAD_POLICY`):

- a toy study through `cardiofair run` (phantom at 64 px, the `cpu` generator for `--steps`
  steps); each stage's time is the one the study records in `.stages/<stage>.json`. Its prepare
  stage runs in a process pool, its quality stage trains the judges in threads, its fairness
  stage trains in threads and computes the group tables in worker processes;
- `cardiofair train --num-processes 2` (accelerate's launcher and its two processes);
- the app's drawing: `Explorer.draw`, what the Draw button calls, one pair a request.

Each item runs alone, beside a busy process (a Python loop on one core, like `yes >
/dev/null`), and alone again with libgomp's own default wait (`GOMP_SPINCOUNT=300000`: threads
spin about 3 ms, as before cardiofair set its policy). It prints each time, beside/alone (issue 31
asks for at most 1.5 on 2 cores) and alone/spinning (the policy's price alone). The environment
is passed on, so `GOMP_SPINCOUNT=2000 python benchmarks/bench_shared_machine.py` measures another
policy. Nothing is asserted. About 8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

STUDY = """\
name: shared
runs: {runs}
prepare: {{source: phantom, n: {subjects}, size: 64, seed: 0}}
split: {{test: 0.2, val: 0.1, seed: 0}}
train: {{preset: cpu, max_steps: {steps}, seed: 0}}
plan: {{strategy: prevalence, target_prevalence: 0.25, attributes: [sex], min_real_support: 1}}
generate: {{seed: 0, batch_size: 32}}
quality: {{steps: 60, classifier_steps: 100, min_images: 5, counterfactual_pairs: 8}}
fairness: {{repeats: 2, doses: [1], epochs: 2, bootstrap: 200, phantom_test_subjects: 400}}
"""

DRAW = """\
import sys, time
from cardiofair.app.explorer import Explorer
explorer = Explorer(sys.argv[1], sys.argv[2], workdir=sys.argv[3])
mask, spacing, values = explorer.record_mask(explorer.records_in(explorer.cells()[0])[0])
sampler = explorer.sampler()
explorer.draw(mask, values, 0, sampler, spacing)
start = time.perf_counter()
for seed in range(1, int(sys.argv[4]) + 1):
    explorer.draw(mask, values, seed, sampler, spacing)
print(time.perf_counter() - start)
"""


@contextmanager
def busy(on: bool) -> Iterator[None]:
    """One single-threaded process spinning on a core for the duration (when ``on``)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def cardiofair(*args: str) -> list[str]:
    """The ``cardiofair`` command of this interpreter."""
    return [sys.executable, "-m", "cardiofair", *args]


def run_quietly(command: list[str], env: dict[str, str] | None = None) -> str:
    """``command``'s standard output; a failure stops the benchmark with the end of its messages."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def timed(command: list[str], beside: bool, env: dict[str, str] | None = None) -> float:
    """Seconds ``command`` takes, alone or beside a busy process."""
    with busy(beside):
        start = time.perf_counter()
        run_quietly(command, env)
        return time.perf_counter() - start


def study_times(runs: Path, args: argparse.Namespace, beside: bool, env: dict[str, str] | None) -> dict[str, float]:
    """Each stage's recorded seconds in a fresh toy study in ``runs`` (a stage the study skips,
    such as masks for borrowed masks, has no record)."""
    from cardiofair.study import STAGE_NAMES

    config = runs.with_suffix(".yaml")
    config.write_text(STUDY.format(runs=runs, subjects=args.subjects, steps=args.steps))
    total = timed(cardiofair("run", str(config)), beside, env)
    records = {stage: runs / "shared" / ".stages" / f"{stage}.json" for stage in STAGE_NAMES}
    times = {stage: json.loads(record.read_text())["seconds"] for stage, record in records.items() if record.is_file()}
    return {**times, "whole study": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="generator training steps (default 40)")
    parser.add_argument("--subjects", type=int, default=400, help="phantom subjects of the toy study (default 400)")
    parser.add_argument("--pairs", type=int, default=10, help="pairs the app draws (default 10)")
    args = parser.parse_args()
    from cardiofair.threads import WAIT_VARIABLES, apply_thread_policy

    policy = apply_thread_policy()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, "
          f"{', '.join(f'{k}={v}' for k, v in policy.items())}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    # The third condition is libgomp's own default wait (spinning about 3 ms): the speed alone
    # before cardiofair set its policy (issue 31), measured in the same run.
    spinning = {**{k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}, "GOMP_SPINCOUNT": "300000"}
    conditions = {"alone": (False, None), "beside": (True, None), "spinning": (False, spinning)}
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for condition, (beside, env) in conditions.items():
            for stage, seconds in study_times(tmp / condition, args, beside, env).items():
                rows.setdefault(stage, {})[condition] = seconds
            print(f"toy study, {condition}: {rows['whole study'][condition]:.1f} s", flush=True)
        prepared, model = tmp / "alone" / "shared" / "prepare", tmp / "alone" / "shared" / "train"
        for condition, (beside, env) in conditions.items():
            out = tmp / f"two-processes-{condition}"
            rows.setdefault("train, 2 processes", {})[condition] = timed(
                cardiofair("train", str(prepared), "--out", str(out), "--preset", "cpu", "--max-steps",
                           str(args.steps), "--num-processes", "2", "--quiet"), beside, env)
        for condition, (beside, env) in conditions.items():
            draw = [sys.executable, "-c", DRAW, str(model), str(prepared), str(tmp / f"drawn-{condition}"),
                    str(args.pairs)]
            with busy(beside):
                seconds = float(run_quietly(draw, env).split()[-1])
            rows.setdefault(f"app, {args.pairs} pairs", {})[condition] = seconds
    print(textwrap.dedent(f"""
        {'stage':<22}{'alone s':>9}{'beside s':>10}{'ratio':>7}{'spinning alone s':>18}{'alone/spinning':>16}"""))
    for name, times in rows.items():
        # A stage of a fraction of a second (split, plan) has no ratio worth reading.
        beside = f"{times['beside'] / times['alone']:.2f}" if times["alone"] >= 1 else "-"
        policy = f"{times['alone'] / times['spinning']:.2f}" if times["spinning"] >= 1 else "-"
        print(f"{name:<22}{times['alone']:>9.1f}{times['beside']:>10.1f}{beside:>7}"
              f"{times['spinning']:>18.1f}{policy:>16}")


if __name__ == "__main__":
    main()
