"""A tiny trained model in a temporary MLflow SQLite registry, for the serving tests.

Real, not mocked: a generated dataset, `train_and_register` with few trees, a
real registry with the ``champion`` alias. Trained once per test session; the
fixtures of ``conftest.py`` (`trained_registry`, `running_server`, `api_key`, ...)
are how tests reach what is here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

END = date(2024, 6, 1)


@dataclass(frozen=True)
class ApiKey:
    """An API key as a client sends it (``auth`` headers) and as settings hold it (``digest``)."""

    key: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


SERVING_KEY = ApiKey("clk_serving-tests_0123456789abcdef")


@dataclass
class TrainedRegistry:
    root: Path
    data: Path
    tracking_uri: str
    version: str

    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.tracking_uri}

    @contextmanager
    def active(self) -> Iterator[TrainedRegistry]:
        """cwd and MLflow pointing at this registry for the duration."""
        with using_registry_at(self.root, self.tracking_uri):
            yield self


def tiny_params(seed: int = 0):
    from training.params import TrainParams

    return TrainParams(num_boost_round=25, early_stopping_rounds=10, max_snapshots=3,
                       step_days=60, num_threads=1, seed=seed, calibration="none")


def train_registry(root: Path, *, customers: int = 400, seed: int = 11) -> TrainedRegistry:
    """Generate a dataset in ``root`` and train its first model into ``root``'s registry."""
    from features.generate import generate_dataset
    from features.io import read_dataset
    from training.run import train_and_register

    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    with using_registry_at(root, tracking_uri):
        data = root / "data"
        generate_dataset(customers=customers, seed=seed, end=END, kind="ecommerce").write(data)
        dataset = read_dataset(data).dataset
        result = train_and_register(dataset, as_of=dataset.default_as_of(), params=tiny_params())
    assert result.promoted, f"the first model should become champion: {result.reason}"
    return TrainedRegistry(root=root, data=data, tracking_uri=tracking_uri,
                           version=str(result.version))


@contextmanager
def using_registry_at(root: Path, tracking_uri: str):
    """Work in ``root`` against its MLflow store, with no CHURNLENS_* from the outer environment."""
    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        for name in [n for n in os.environ if n.startswith("CHURNLENS_")]:
            patch.delenv(name)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        yield


def wait_ready(target, *, timeout: float = 120.0):
    """The serving state once the first model load has settled (the timeout only guards a
    broken test; nothing is polled). ``target`` is an app or a TestClient; an HTTP client
    of `running_server` (which has waited already) gets /readyz's answer, checked once."""
    app = getattr(target, "app", target)
    if not hasattr(app, "state"):
        answer = target.get("/readyz")
        assert answer.status_code == 200, answer.text
        return answer.json()
    holder = app.state.holder
    assert holder.settled.wait(timeout), f"the model did not load within {timeout} s"
    assert holder.state is not None, f"no model is serving: {holder.last_error}"
    return holder.state


@contextmanager
def running_server(app, *, timeout: float = 60.0):
    """Serve ``app`` with real uvicorn on 127.0.0.1 in a thread; yield its base URL once its
    first model load has settled (loaded or failed).

    The socket listens before uvicorn starts, so a first request waits in the
    backlog instead of finding nothing there.
    """
    import socket
    import threading

    import uvicorn

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(128)
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]},
                              name="uvicorn-test", daemon=True)
    thread.start()
    try:
        # settled, with or without a model: ingestion-only servers serve no model
        assert app.state.holder.settled.wait(timeout), f"no model load settled in {timeout} s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        listening.close()
