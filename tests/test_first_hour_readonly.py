"""Commands that only read refuse in a folder without stores, in one line, creating nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end: real servers, subprocesses or training

#: the commands installed beside the interpreter running the tests
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, plain_env):
    where = tmp_path_factory.mktemp("readonly-data")
    subprocess.run([str(VENV_BIN / "churnlens"), "generate", "--customers", "300", "--out",
                    str(where / "data"), "--seed", "5"], env=plain_env(), check=True,
                   capture_output=True, timeout=300)
    return where / "data"


@pytest.fixture(scope="module")
def run_command(plain_env):
    """``run_command(args, cwd, **env)``: ``churnlens ARGS`` in a user's shell."""

    def run(args: list[str], cwd, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "churnlens"), *args], cwd=cwd,
                              env=plain_env(CHURNLENS_NO_PROGRESS="1", **env),
                              capture_output=True, text=True, timeout=300, check=False)

    return run


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize(("args", "env", "store", "fix"), [
    (["score", "--data", "{data}", "--out", "scores.parquet"], {}, "mlflow.db",
     "churnlens train"),
    (["promote", "1"], {}, "mlflow.db", "churnlens train"),
    (["serve", "--port", "1"], {"CHURNLENS_ALLOW_ANONYMOUS": "true"}, "mlflow.db",
     "churnlens train"),
    (["outreach", "list"], {}, "outbox.db", "churnlens score --outreach"),
    (["outreach", "dead"], {}, "outbox.db", "churnlens score --outreach"),
    (["outreach", "retry", "--all-dead"], {}, "outbox.db", "churnlens score --outreach"),
], ids=["score", "promote", "serve", "outreach-list", "outreach-dead", "outreach-retry"])
def test_read_only_command_refuses_without_creating_a_store(tmp_path, data_dir, args, env,
                                                            store, fix, run_command):
    done = run_command([a.replace("{data}", str(data_dir)) for a in args], tmp_path, **env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = _error_lines(done)
    assert len(lines) == 1, f"one line, not a traceback or a box: {lines}"
    assert f"{tmp_path}/{store}" in lines[0] or f"sqlite:///{store}" in lines[0], (
        f"the message names the store it looked in: {lines[0]}")
    setting = "MLFLOW_TRACKING_URI" if store == "mlflow.db" else "CHURNLENS_OUTBOX_URL"
    assert fix in lines[0] and setting in lines[0], f"the message says what to do: {lines[0]}"
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing may be created"


def test_report_without_stores_writes_only_the_report_and_says_why(tmp_path, data_dir, run_command):
    done = run_command(["report", "--data", str(data_dir), "--out", "report.html"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert f"sqlite:///{tmp_path}/mlflow.db" in done.stderr, (
        "the report's note names the store it looked in")
