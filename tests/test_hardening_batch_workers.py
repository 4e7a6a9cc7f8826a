"""A batch driver killed by SIGKILL takes its worker processes with it; --resume still works.

The hardening review found spawned workers re-parented to PID 1 after the driver
died, scoring their queued chunks and then idling with the model in memory. Here a
real `churnlens score --workers 2` runs on a generated dataset in small chunks; once
the work directory holds a finished chunk, the driver gets SIGKILL (it can clean
nothing up). Its workers must be gone soon after (polled, no timing asserted), and
`--resume` must then finish with output byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from serving.batch import output_paths

CUSTOMERS = 600
CHUNK = 10
#: how long the test waits for something that should take a fraction of a second;
#: generous so that a loaded machine never fails it (it asserts on state, not time)
PATIENCE_SECONDS = 60.0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads process parentage from /proc (Linux)")


@pytest.fixture(scope="module")
def data_dir(generated_ecommerce) -> Path:
    return generated_ecommerce(customers=CUSTOMERS, seed=5)


def _score(bundle_dir: Path, data_dir: Path, out: Path, *extra: str, workers: int = 2
           ) -> list[str]:
    churnlens = Path(sys.executable).with_name("churnlens")
    return [str(churnlens), "score", "--data", str(data_dir), "--out", str(out),
            "--model", str(bundle_dir), "--chunk-size", str(CHUNK), "--workers", str(workers),
            "--explain", "all", *extra]


def _uninterrupted(bundle_dir: Path, data_dir: Path, out: Path) -> Path:
    """The reference output, scored in this process as `churnlens score` would."""
    from models.loading import load_model
    from serving.batch import run_batch
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer

    scorer = Scorer(load_model(str(bundle_dir)), rules=load_rules(None))
    return run_batch(data=data_dir, out=out, scorer=scorer, model_uri=str(bundle_dir),
                     chunk_size=CHUNK, explain="all").output


def _environment() -> dict[str, str]:
    return {**os.environ, "CHURNLENS_NO_PROGRESS": "1"}


def _children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (from /proc, so no extra dependency)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # the command name may hold spaces or parentheses: fields resume after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead process whose parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@contextmanager
def _reaped(pids: set[int]) -> Iterator[None]:
    """Whatever the test asserts, leave none of the processes it started behind (``pids``
    is read on the way out, so it may grow meanwhile)."""
    try:
        yield
    finally:
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_workers_die_with_a_killed_driver_and_resume_completes(bundle_dir, data_dir,
                                                               tmp_path, eventually):
    reference = _uninterrupted(bundle_dir, data_dir, tmp_path / "reference.parquet")

    out = tmp_path / "scores.parquet"
    _, work = output_paths(out)
    driver = subprocess.Popen(_score(bundle_dir, data_dir, out), env=_environment(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    with _reaped(workers):
        def progress_and_workers() -> bool:
            workers.update(p for p in _children(driver.pid) if _running(p))
            return driver.poll() is None and len(workers) >= 2 and any(
                work.glob("rows-*.parquet"))

        eventually(progress_and_workers, timeout=PATIENCE_SECONDS,
                   what="the driver's workers and a first finished chunk")
        total = -(-CUSTOMERS // CHUNK)
        finished = len(list(work.glob("rows-*.parquet")))
        assert finished < total, "the dataset must be big enough to interrupt the run"

        workers.add(driver.pid)  # reaped by the finally block should an assert fail first
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        eventually(lambda: not any(_running(p) for p in workers - {driver.pid}),
                   timeout=PATIENCE_SECONDS,
                   what=f"workers {sorted(workers)} to exit after their driver was killed")

    assert not out.exists(), "the output appears only when the run completes"
    # one worker: the resumed run needs none of the killed run's processes
    resumed = subprocess.run(_score(bundle_dir, data_dir, out, "--resume", workers=1),
                             env=_environment(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert " 0 resumed" not in resumed.stdout, resumed.stdout
    assert out.read_bytes() == reference.read_bytes(), "resume gives the uninterrupted output"
    rejects, _ = output_paths(out)
    assert rejects.read_bytes() == output_paths(reference)[0].read_bytes()
    assert not work.exists()
