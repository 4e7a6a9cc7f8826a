"""A new user's first hour, for tests: one demo folder, and commands run as printed.

`run_demo` runs ``churnlens demo`` once (300 customers) in a fresh directory
the way a user does; `background` starts a printed server command in its own
process group and stops it (and every child) afterwards (the `wait_for` fixture
polls it until it answers).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
#: PATH of a shell where churnlens' environment is not activated
PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plain_env(**extra: str) -> dict[str, str]:
    """A user's shell: no churnlens, MLflow or virtualenv settings, no activated .venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHURNLENS_", "MLFLOW_", "VIRTUAL_ENV", "PYTEST_"))}
    env["PATH"] = PLAIN_PATH
    return env | extra


@dataclass
class DemoRun:
    """Where the demo ran, what it printed, and the ports its hints name."""

    cwd: Path
    folder: Path
    output: str
    port: int
    ui_port: int
    hints: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)


def run_demo(cwd: Path) -> DemoRun:
    """Run ``churnlens demo`` in ``cwd`` as a user would (installed command, no .venv on PATH)."""
    port, ui_port = free_port(), free_port()
    done = subprocess.run(
        [str(VENV_BIN / "churnlens"), "demo", "--folder", "demo", "--customers", "300",
         "--port", str(port), "--ui-port", str(ui_port)],
        cwd=cwd, env=plain_env(CHURNLENS_NO_PROGRESS="1", COLUMNS="80"), capture_output=True,
        text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"the demo failed:\n{output[-4000:]}"
    tail = done.stdout.split("Next, each $ line is one command", 1)[-1]
    return DemoRun(
        cwd=cwd, folder=cwd / "demo", output=done.stdout, port=port, ui_port=ui_port,
        hints=[line[4:] for line in tail.splitlines() if line.startswith("  $ ")],
        steps=[line[2:] for line in done.stdout.splitlines() if line.startswith("$ cd ")],
    )


@contextlib.contextmanager
def background(command: str, *, cwd: Path, env: dict[str, str], log: Path
               ) -> Iterator[subprocess.Popen]:
    """Run a shell line in its own process group; stop the whole group on exit."""
    with log.open("w") as out:
        process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def port_of(command: str) -> int:
    match = re.search(r"--port (\d+)", command)
    assert match, f"no --port in {command!r}"
    return int(match.group(1))
