"""Shared fixtures: a temporary working directory, a saved bundle, its scorer, generated data,
the clocks that tests drive by hand (the relay's, the model holder's registry polls), and
`eventually`, the one place a test waits for another process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run a test in a fresh working directory so default stores land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _forget_mlflow_stores()
    yield tmp_path
    _forget_mlflow_stores()


def _forget_mlflow_stores() -> None:
    """MLflow caches stores and engines per URI: a relative `sqlite:///mlflow.db` opened in
    an earlier test's folder would otherwise be reused here."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
    ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()
    for store in (TrackingStore, RegistryStore):
        for uri in [uri for uri in store._engine_map if uri.startswith("sqlite:///mlflow.db")]:
            store._engine_map.pop(uri).dispose()


@pytest.fixture(scope="session")
def fit():
    """The churn and CLV model fitted once on generated e-commerce data (`fitted`)."""
    from churn_training_data import fitted

    return fitted()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`churnlens demo` run once, as a user runs it (tests of the first hour share it)."""
    from first_hour_support import run_demo

    return run_demo(tmp_path_factory.mktemp("first-hour"))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    """The fast test bundle (ecommerce, inactivity churn) saved as a model directory."""
    from churn_training_data import fitted

    directory = tmp_path_factory.mktemp("bundle")
    fitted().bundle.save(directory)
    return directory


@pytest.fixture(scope="session")
def scorer(bundle_dir):
    """A scorer of ``bundle_dir`` with the built-in rules."""
    from models.loading import load_model
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer

    return Scorer(load_model(str(bundle_dir)), rules=load_rules(None))


@pytest.fixture(scope="session")
def generated_ecommerce(tmp_path_factory):
    """Writes a generated ecommerce dataset (5 orders, 20 events each) as CSV files."""
    from features.generate import generate_dataset

    def write(*, customers: int, seed: int) -> Path:
        directory = tmp_path_factory.mktemp("data")
        generate_dataset(customers=customers, seed=seed, end=date(2026, 6, 30), kind="ecommerce",
                         orders_per_customer=5, events_per_customer=20).write(directory, fmt="csv")
        return directory

    return write


class ManualClock:
    """A relay clock that moves only when the test moves it (``Relay(clock=...)``)."""

    def __init__(self) -> None:
        from serving.outreach.outbox import utcnow

        # a minute ahead, so actions recorded during the test are due at once
        self.now = utcnow() + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def advance_to(self, moment: datetime) -> datetime:
        self.now = max(self.now, moment)
        return self.now


@pytest.fixture
def relay_clock() -> ManualClock:
    """The clock a test's relay runs on: retries fall due when the test advances it."""
    return ManualClock()


@pytest.fixture
def settle(relay_clock):
    """Run a relay on ``relay_clock`` until no action is pending or delivering.

    Between passes the clock jumps to the latest scheduled retry, so a retry
    schedule of hours settles in a few passes and no test waits for it.
    """

    def run(relay, outbox, *, passes: int = 50) -> None:
        assert relay._clock is relay_clock, "build the relay with clock=relay_clock"
        for _ in range(passes):
            relay.drain()
            pending = outbox.list_actions(status="pending", limit=100_000)
            if not pending and outbox.status_counts()["delivering"] == 0:
                return
            relay_clock.advance_to(max(row.next_attempt_at for row in pending))
        raise AssertionError(f"actions did not settle in {passes} passes: "
                             f"{outbox.status_counts()}")

    return run


class ManualPolls:
    """The model holder's pause between registry polls, released by the test.

    ``poll()`` lets exactly one registry poll happen and returns once it is done
    (the holder is paused again), so a test moves the alias and knows when the
    server has followed it, without sleeping.
    """

    def __init__(self) -> None:
        self._paused = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None

    async def pause(self, _seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        self._paused.set()
        await self._release.wait()

    def wait_paused(self, *, timeout: float = 120.0) -> None:
        assert self._paused.wait(timeout), "the model holder never paused between polls"

    def poll(self, *, timeout: float = 120.0) -> None:
        self.wait_paused(timeout=timeout)
        self._paused.clear()
        assert self._loop is not None and self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)
        assert self._paused.wait(timeout), "the registry poll did not finish"


@pytest.fixture
def manual_polls() -> ManualPolls:
    """Pass ``manual_polls.pause`` to ``create_app(pause=...)``; ``poll()`` runs one poll."""
    return ManualPolls()
#: the outreach-effect rules (half of every rule held out) and the day they act
EFFECT_RULES = Path(__file__).resolve().parent.parent / "bench" / "effect_rules.yaml"
EFFECT_ACTED_ON = "2024-01-01"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """The monitoring world scored with half of each rule held out, then replayed with the
    simulated outreach's known effects: (world, outbox URL, replayed data folder).

    Built once per process (on disk); each module works inside the world's registry.
    """
    from monitoring_support import END, shared_world
    from serving_fixtures import using_registry_at
    from typer.testing import CliRunner

    from churnlens import build_app

    root = tmp_path_factory.getbasetemp() / "monitoring-world"
    root.mkdir(exist_ok=True)
    with using_registry_at(root, f"sqlite:///{root / 'mlflow.db'}"):
        world = shared_world(root)
        url = f"sqlite:///{root / 'effect.db'}"
        runner, app = CliRunner(), build_app()
        if not (root / "effect.db").exists():
            result = runner.invoke(app, ["score", "--data", str(world.plain), "--as-of",
                                         EFFECT_ACTED_ON, "--out", str(root / "effect.parquet"),
                                         "--outreach", "--workers", "1", "--outbox-url", url,
                                         "--rules", str(EFFECT_RULES)])
            assert result.exit_code == 0, result.output
            result = runner.invoke(app, ["generate", "--customers", "1500", "--seed", "5",
                                         "--end", END.isoformat(), "--kind", "ecommerce",
                                         "--out", str(root / "replayed")])
            assert result.exit_code == 0, result.output
            result = runner.invoke(app, ["outreach", "replay", "--data", str(root / "replayed"),
                                         "--seed", "5", "--outbox", url])
            assert result.exit_code == 0, result.output
        yield world, url, root / "replayed"


def _eventually(condition: Callable[[], T | None], *, timeout: float = 30.0,
                what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy (and return that); fail after
    ``timeout`` seconds.

    For what another process or thread makes true: a server answering, a webhook
    arriving, workers exiting. The deadline only stops a broken test; nothing
    asserts how long it took. The pause between polls grows from 20 ms to 100 ms.
    """
    deadline = time.monotonic() + timeout
    pause = 0.02
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(pause)  # the suite's one sleep: a pause between polls, never a measurement
        pause = min(pause * 2, 0.1)


@pytest.fixture(scope="session")
def eventually() -> Callable[..., Any]:
    """``eventually(condition, timeout=..., what=...)``: poll until another process makes
    ``condition`` true (see `_eventually`)."""
    return _eventually


@pytest.fixture(scope="session")
def wait_for(eventually) -> Callable[..., httpx.Response]:
    """``wait_for(url, timeout=..., ok=(200,), alive=process)``: poll ``url`` until it answers
    with one of ``ok``; fails at once if the ``alive`` server process exits."""

    def wait(url: str, *, timeout: float = 180.0, ok: tuple[int, ...] = (200,),
             alive=None) -> httpx.Response:
        last = ["no answer"]

        def answered() -> httpx.Response | None:
            if alive is not None and alive.poll() is not None:
                raise AssertionError(f"the server exited with {alive.returncode} before {url} "
                                     "answered")
            try:
                response = httpx.get(url, timeout=10)
            except httpx.TransportError as error:
                last[0] = repr(error)
                return None
            if response.status_code in ok:
                return response
            last[0] = f"{response.status_code}: {response.text[:300]}"
            return None

        try:
            return eventually(answered, timeout=timeout, what=f"{url} answering {ok}")
        except AssertionError as error:
            raise AssertionError(f"{error} (last: {last[0]})") from None

    return wait
