"""Shared fixtures; test modules ask for them by name and import no helper module.

What they stand on lives in the support modules beside this file (the trained
registry, the webhook receiver, the generated worlds, throwaway databases); only
this file imports those. Sections: working directory and clocks; waiting
(`eventually`, the one place a test waits for another process); fitted models
and generated data; the trained registry, its API keys and real servers;
databases; webhooks and outreach records; the first hour of a user.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from scratch_db import BACKENDS

T = TypeVar("T")


# -- working directory and clocks -------------------------------------------------------

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


# -- waiting ----------------------------------------------------------------------------

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


# -- fitted models and generated data -----------------------------------------------------

@pytest.fixture(scope="session")
def fast_params():
    """The fast training parameters of the models/training tests (`FAST`)."""
    from churn_training_data import FAST

    return FAST


@pytest.fixture(scope="session")
def generated():
    """``generated(kind="ecommerce", customers=2000, seed=11)``: (GeneratedData, Dataset) of a
    seeded generated business, built once per argument."""
    from churn_training_data import generated

    return generated


@pytest.fixture(scope="session")
def training_set():
    """``training_set(kind, definition)``: the snapshots of a generated business (cached)."""
    from churn_training_data import training_set

    return training_set


@pytest.fixture(scope="session")
def fitted():
    """``fitted(kind, definition)``: the fast parameters fitted on a generated business."""
    from churn_training_data import fitted

    return fitted


@pytest.fixture(scope="session")
def holdout_features():
    """``holdout_features(fit)``: the held-out snapshot's features, as scoring sees them."""
    from churn_training_data import holdout_features

    return holdout_features


@pytest.fixture(scope="session")
def shuffled():
    """``shuffled(training_set, seed=0)``: churn labels permuted within each snapshot."""
    from churn_training_data import shuffled

    return shuffled


@pytest.fixture(scope="session")
def fit(fitted):
    """The churn and CLV model fitted once on generated e-commerce data (`fitted`)."""
    return fitted()


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, fitted) -> Path:
    """The fast test bundle (ecommerce, inactivity churn) saved as a model directory."""
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


@pytest.fixture(scope="session")
def tiny_as_of():
    """The date the hand-made dataset's features are worked out at (`features_fixtures`)."""
    from features_fixtures import AS_OF

    return AS_OF


@pytest.fixture(scope="session")
def tiny_tables():
    """``tiny_tables()``: the hand-made dataset's tables as raw text frames (a fresh copy)."""
    from features_fixtures import tiny_tables

    return tiny_tables


@pytest.fixture(scope="session")
def tiny_dataset():
    """``tiny_dataset(orders=True)``: the hand-made dataset validated, a table dropped."""
    from features_fixtures import tiny_dataset

    return tiny_dataset


@pytest.fixture(scope="session")
def small_dataset():
    """``small_dataset(directory, customers=150, seed=3)``: a generated mixed dataset as CSV."""
    from db_source_support import small_dataset

    return small_dataset


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args)``: ``churnlens ARGS`` through typer's runner."""
    from db_source_support import run_cli

    return run_cli


# -- the trained registry, API keys and real servers -------------------------------------

@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory):
    """A tiny model trained once into a real MLflow SQLite registry as ``champion``.

    ``with trained_registry.active():`` points cwd and MLflow at it. Tests that
    move the alias put it back, so every module sees the same champion.
    """
    from serving_fixtures import train_registry

    return train_registry(tmp_path_factory.mktemp("serving-registry"))


@pytest.fixture(scope="session")
def registry_at():
    """``with registry_at(root, tracking_uri):`` work in ``root`` against its MLflow store,
    with no CHURNLENS_* from the outer environment."""
    from serving_fixtures import using_registry_at

    return using_registry_at


@pytest.fixture(scope="session")
def tiny_params():
    """``tiny_params(seed=0)``: training parameters of a model trained in seconds."""
    from serving_fixtures import tiny_params

    return tiny_params


@pytest.fixture(scope="session")
def api_key():
    """The serving tests' API key: ``api_key.digest`` for settings, ``api_key.auth`` headers."""
    from serving_fixtures import SERVING_KEY

    return SERVING_KEY


@pytest.fixture(scope="session")
def scoped_keys():
    """Keys with scopes for the live tests: ``entries`` for settings; ``full``, ``read`` (score
    only) and ``write`` (ingest only) headers."""
    from live_support import SCOPED_KEYS

    return SCOPED_KEYS


@pytest.fixture(scope="session")
def running_server():
    """``with running_server(app) as base_url:`` real uvicorn on 127.0.0.1 in a thread, once
    its first model load has settled."""
    from serving_fixtures import running_server

    return running_server


@pytest.fixture(scope="session")
def wait_ready():
    """``wait_ready(app_or_client)``: the serving state once the first model load settled."""
    from serving_fixtures import wait_ready

    return wait_ready


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()``: a port nothing listens on right now, on 127.0.0.1."""
    from first_hour_support import free_port

    return free_port


@pytest.fixture(scope="session")
def strict_json():
    """``strict_json(text)``: parse a response as a strict client would (no NaN, Infinity)."""
    import json

    def parse(text: str) -> Any:
        def refuse(token: str) -> Any:
            raise ValueError(f"non-standard JSON token {token}")

        return json.loads(text, parse_constant=refuse)

    return parse


# -- databases ------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    """``sqlite``, and ``postgresql`` when CHURNLENS_TEST_POSTGRES_URL is set: a test or
    fixture that asks for it runs on each."""
    return request.param


@pytest.fixture(scope="session")
def scratch_database():
    """``with scratch_database(backend, root, prefix=...) as url:`` a database of its own (a
    SQLite file, or a PostgreSQL schema dropped after)."""
    from scratch_db import scratch_database

    return scratch_database


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """CHURNLENS_TEST_POSTGRES_URL; the test is skipped when it is not set."""
    from scratch_db import POSTGRES_URL

    if not POSTGRES_URL:
        pytest.skip("CHURNLENS_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def live_tables():
    """``live_tables.create(url, attributes=...)`` the empty contract tables as `churnlens
    load` creates them; ``live_tables.count(url, table, **where)`` counts rows."""
    import live_support

    return live_support.LiveTables()


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[str], tuple[Any, str]]]:
    """``proxy, url = tcp_proxy(database_url)``: the database behind a TCP proxy that can
    ``cut()`` every connection and ``restore()`` them (closed after the test)."""
    from live_support import TcpProxy, proxied_url, url_host_port

    proxies: list[TcpProxy] = []

    def start(url: str) -> tuple[TcpProxy, str]:
        proxy = TcpProxy(*url_host_port(url))
        proxies.append(proxy)
        return proxy, proxied_url(url, proxy)

    yield start
    for proxy in proxies:
        proxy.close()


# -- webhooks and outreach records ----------------------------------------------------------

@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Any]]:
    """``make_receiver(secret=..., port=0, record=True)``: a webhook receiver on 127.0.0.1
    (``.start()`` it); every one made is stopped after the test."""
    from outreach_support import Receiver

    made: list[Receiver] = []

    def make(**options: Any) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for receiver in made:
        receiver.stop()


@pytest.fixture(scope="session")
def score_record():
    """``score_record(customer_id, **changes)``: a plausible score record."""
    from outreach_support import score_record

    return score_record


@pytest.fixture(scope="session")
def triggered():
    """``triggered(n, channel, rule=..., prefix=...)``: n triggered actions, one a customer."""
    from outreach_support import triggered

    return triggered


# -- worlds: monitoring, outreach effect ------------------------------------------------------

#: the outreach-effect rules (half of every rule held out) and the day they act
EFFECT_RULES = Path(__file__).resolve().parent.parent / "bench" / "effect_rules.yaml"
EFFECT_ACTED_ON = "2024-01-01"


@pytest.fixture(scope="module")
def monitored_world(tmp_path_factory, registry_at):
    """The monitoring world (`monitoring_support`), built once per process, with cwd and
    MLflow pointing at its registry while the module runs."""
    from monitoring_support import shared_world

    root = tmp_path_factory.getbasetemp() / "monitoring-world"
    root.mkdir(exist_ok=True)
    with registry_at(root, f"sqlite:///{root / 'mlflow.db'}"):
        yield shared_world(root)


@pytest.fixture(scope="module")
def replayed(monitored_world):
    """The monitoring world scored with half of each rule held out, then replayed with the
    simulated outreach's known effects: (world, outbox URL, replayed data folder).

    Built once per process (on disk); each module works inside the world's registry.
    """
    from typer.testing import CliRunner

    from churnlens import build_app

    world = monitored_world
    root = world.root
    url = f"sqlite:///{root / 'effect.db'}"
    runner, app = CliRunner(), build_app()
    if not (root / "effect.db").exists():
        result = runner.invoke(app, ["score", "--data", str(world.plain), "--as-of",
                                     EFFECT_ACTED_ON, "--out", str(root / "effect.parquet"),
                                     "--outreach", "--workers", "1", "--outbox-url", url,
                                     "--rules", str(EFFECT_RULES)])
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["generate", "--customers", "1500", "--seed", "5",
                                     "--end", world.end.isoformat(), "--kind", "ecommerce",
                                     "--out", str(root / "replayed")])
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["outreach", "replay", "--data", str(root / "replayed"),
                                     "--seed", "5", "--outbox", url])
        assert result.exit_code == 0, result.output
    yield world, url, root / "replayed"


# -- a user's first hour ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`churnlens demo` run once, as a user runs it (tests of the first hour share it)."""
    from first_hour_support import run_demo

    return run_demo(tmp_path_factory.mktemp("first-hour"))


@pytest.fixture(scope="session")
def plain_env():
    """``plain_env(**extra)``: a user's shell environment (no churnlens, MLflow or venv)."""
    from first_hour_support import plain_env

    return plain_env


@pytest.fixture(scope="session")
def background():
    """``with background(line, cwd=, env=, log=) as process:`` a shell line in its own
    process group, stopped with all its children after."""
    from first_hour_support import background

    return background


@pytest.fixture(scope="session")
def port_of():
    """``port_of(command)``: the ``--port`` a printed command names."""
    from first_hour_support import port_of

    return port_of
