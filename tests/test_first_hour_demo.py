"""The demo's printed commands run as printed, from where the user stands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from churnlens import command_path, next_steps

pytestmark = pytest.mark.slow  # end-to-end: real servers, subprocesses or training


def test_hints_call_the_venv_commands_relative_to_the_demo_folder():
    root = Path("/home/ann/churnlens")
    hints = next_steps(Path("churnlens-demo"), bin_dir=root / ".venv/bin", cwd=root,
                       customer_id="C000042")
    lines = [line for _, line in hints]
    assert lines[0] == ("cd churnlens-demo && ../.venv/bin/mlflow ui --backend-store-uri "
                        "sqlite:///mlflow.db --port 5000 --workers 1")
    assert "../.venv/bin/churnlens serve --port 8000" in lines[1]
    assert lines[2] == "curl -s http://127.0.0.1:8000/v1/customers/C000042/score"
    assert all("\n" not in line for line in lines)


def test_command_path_is_absolute_when_the_install_is_elsewhere():
    assert command_path("churnlens", bin_dir=Path("/opt/cl/bin"), folder=Path("demo"),
                        cwd=Path("/home/ann")) == "/opt/cl/bin/churnlens"
    assert command_path("mlflow", bin_dir=Path("/home/ann/.venv/bin"), folder=Path("/tmp/d"),
                        cwd=Path("/home/ann")) == "/home/ann/.venv/bin/mlflow"


def test_demo_prints_one_unwrapped_line_per_command(demo_run):
    assert len(demo_run.hints) == 3 + 5, demo_run.output[-2000:]
    assert len(demo_run.steps) == 7, "every step prints the command it runs"
    for line in [*demo_run.hints[:2], *demo_run.hints[3:5], *demo_run.steps]:
        assert line.startswith("cd demo && "), line
        assert " churnlens " not in f" {line} " and " mlflow " not in f" {line} ", (
            f"a bare command needs an activated .venv: {line}")


def test_printed_steps_rerun_as_printed(demo_run, plain_env):
    """A user re-runs a step by pasting its line (no .venv on the PATH)."""
    for step in (s for s in demo_run.steps if " validate " in s or " outreach list " in s):
        done = subprocess.run(["bash", "-c", step], cwd=demo_run.cwd, env=plain_env(),
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{step}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"


def test_mlflow_ui_hint_serves_the_demo_store(demo_run, tmp_path, wait_for, plain_env, port_of,
                                              background):
    ui = demo_run.hints[0]
    assert port_of(ui) == demo_run.ui_port
    with background(ui, cwd=demo_run.cwd, env=plain_env(), log=tmp_path / "ui.log") as server:
        base = f"http://127.0.0.1:{demo_run.ui_port}"
        page = wait_for(f"{base}/", alive=server)
        assert "<title>MLflow" in page.text or "MLflow" in page.text
        experiment = wait_for(f"{base}/api/2.0/mlflow/experiments/get-by-name"
                              "?experiment_name=churnlens", alive=server).json()["experiment"]
        tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
        assert tags.get("mlflow.experimentKind") == "custom_model_development"


def test_serve_and_curl_hints_score_the_named_customer(demo_run, tmp_path, wait_for, plain_env,
                                                       port_of, background):
    serve, curl = demo_run.hints[1], demo_run.hints[2]
    assert port_of(serve) == demo_run.port
    with background(serve, cwd=demo_run.cwd, env=plain_env(), log=tmp_path / "serve.log") as s:
        wait_for(f"http://127.0.0.1:{demo_run.port}/healthz", alive=s)
        wait_for(f"http://127.0.0.1:{demo_run.port}/readyz", alive=s)
        done = subprocess.run(["bash", "-c", curl], cwd=demo_run.cwd, env=plain_env(),
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    score = json.loads(done.stdout)
    assert score["customer_id"] in curl
    assert score["risk_tier"] in ("low", "medium", "high"), (
        "the hint names a customer the model scores")
    assert score["reasons"], "scores by id carry their reasons"
    log = (tmp_path / "serve.log").read_text()
    assert "Downloading artifacts" not in log, "no MLflow progress bars in the server output"


def test_live_hints_load_serve_and_ingest_as_printed(demo_run, tmp_path, wait_for,
                                                     eventually, plain_env, port_of, background):
    """The live variant: files into SQLite, served, an ingest that moves the customer's score
    as printed (probability and tier) and has the rescoring write the printed action, treated
    (not held out), to the live outbox."""
    import re

    from serving.outreach.outbox import Outbox

    load, serve, score, ingest, again = demo_run.hints[3:8]
    folder = demo_run.cwd / "demo"
    promise = re.search(
        r"(\S+) returns their latest order \(an ingest\): the score moves from churn "
        r"probability ([\d.]+) \((\w+)\) to ([\d.]+) \((\w+)\), and the background "
        r"rescoring writes (\w+) to the live outbox", demo_run.output)
    assert promise, f"the demo promises a tier change and an action:\n{demo_run.output[-3000:]}"
    customer, p_before, tier_before, p_after, tier_after, action = promise.groups()
    assert tier_before != tier_after

    def run(line: str) -> str:
        done = subprocess.run(["bash", "-c", line], cwd=demo_run.cwd, env=plain_env(),
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done.stdout

    run(load)
    live_port = port_of(serve)
    with background(serve, cwd=demo_run.cwd, env=plain_env(), log=tmp_path / "live.log") as s:
        wait_for(f"http://127.0.0.1:{live_port}/readyz", alive=s)
        before = json.loads(run(score))
        assert before["customer_id"] == customer
        assert (f"{before['churn_probability']:.3f}", before["risk_tier"]) == \
            (p_before, tier_before)
        written = json.loads(run(ingest))
        assert written["updated"] == 1, written
        assert written["customers_changed"] == [customer], written
        after = json.loads(run(again.split(" && ", 1)[0]))
        assert (f"{after['churn_probability']:.3f}", after["risk_tier"]) == \
            (p_after, tier_after), "the score moves as the demo printed"
        assert after["recommended_action"] == action
        assert customer in run(again)
        outbox = Outbox(f"sqlite:///{folder / 'live-outbox.db'}")

        def fired():
            actions = outbox.action_history()
            return actions[(actions["customer_id"] == customer) & (actions["action"] == action)
                           & (actions["assignment"] == "treated")]

        try:
            eventually(lambda: not fired().empty, timeout=120,
                       what="the printed action, treated, in the live outbox")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{(tmp_path / 'live.log').read_text()[-3000:]}"
                                 ) from None
