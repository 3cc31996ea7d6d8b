"""Start `cardiofair app` as a user does, in its own process, and stop it as Ctrl-C does."""

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from thread_policy import policy_env

# The app's test modules skip, saying so, where the app extra is not installed.
NO_APP_EXTRA = "the app extra is not installed: pip install 'cardiofair[app]'"
# The first start imports torch, diffusers and gradio: slow on a busy 2-core machine.
START_TIMEOUT_S = 240


@dataclass
class RunningApp:
    process: subprocess.Popen
    port: int
    url: str
    log: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(arguments: list[str], log: Path) -> RunningApp:
    """`cardiofair app ARGUMENTS --port FREE`, returned once it says where it listens."""
    port = free_port()
    # Without the thread policy in the environment: the server must set it itself (issue 31).
    env = policy_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "cardiofair", "app", *arguments, "--port", str(port)],
                                   stdout=output, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text()
        if "ready in" in text:
            url = text.split("open ", 1)[1].split()[0]
            return RunningApp(process, port, url, log)
        if process.poll() is not None:
            raise AssertionError(f"`cardiofair app` exited with {process.returncode}:\n{text}")
        time.sleep(0.5)
    process.kill()
    raise AssertionError(f"`cardiofair app` did not start in {START_TIMEOUT_S} s:\n{log.read_text()}")


def stop_app(app: RunningApp, timeout_s: float = 60) -> tuple[int, str]:
    """Ctrl-C, then the exit code and everything the app printed."""
    app.process.send_signal(signal.SIGINT)
    try:
        returncode = app.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        app.process.kill()
        returncode = app.process.wait()
    return returncode, app.log.read_text()
