"""Background rescoring claims each change once across server workers.

Two rescorers over one database stand for two server workers: each claims
customers in ``rescore_claims`` before rescoring them. SQLite always;
PostgreSQL when CHURNLENS_TEST_POSTGRES_URL is set (a schema per test). Clocks
are injected; the workers run side by side in threads released together.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import pandas as pd
import pytest

from serving.ingest.store import LiveStore

NOW = datetime(2024, 6, 1, 12, 0, 0)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def side_by_side(*work):
    """Run the callables in threads released at once; their results in order."""
    start = threading.Barrier(len(work))
    results: list = [None] * len(work)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work[i]()
        except BaseException as error:  # reported to the test below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


@pytest.fixture
def stores(backend, tmp_path, scratch_database, live_tables):
    """Two stores (two workers) on one fresh database with 40 customers, and their clock."""
    with scratch_database(backend, tmp_path, prefix="liveclaim") as url:
        live_tables.create(url)
        clock = Clock(NOW)
        one, two = LiveStore(url, clock=clock), LiveStore(url, clock=clock)
        one.ingest("customers", pd.DataFrame({"customer_id": [f"c-{i:02d}" for i in range(40)]}))
        try:
            yield one, two, clock
        finally:
            one.close()
            two.close()


def test_two_workers_claim_each_change_once_and_a_dead_workers_claim_runs_out(stores):
    one, two, clock = stores
    lease = timedelta(minutes=5)

    def drain(store: LiveStore, worker: str) -> list[tuple[str, datetime]]:
        taken = []
        while batch := store.claim_changes(NOW - timedelta(hours=1), worker=worker,
                                           lease=lease, limit=3):
            taken += batch.items()
            store.finish_claims(batch, worker=worker)
        return taken

    first, second = side_by_side(lambda: drain(one, "w1"), lambda: drain(two, "w2"))
    claimed = Counter(first + second)
    assert len(claimed) == 40 and set(claimed.values()) == {1}, \
        f"each of the 40 changes is claimed by exactly one worker: {claimed.most_common(3)}"
    assert drain(one, "w1") == [] and drain(two, "w2") == [], "nothing is left to claim"

    # a new change of one customer is due again, once
    clock.now = NOW + timedelta(minutes=1)
    one.ingest("customers", pd.DataFrame([{"customer_id": "c-07", "signup_at": "2023-01-01"}]))
    first, second = side_by_side(lambda: drain(one, "w1"), lambda: drain(two, "w2"))
    assert first + second == [("c-07", NOW + timedelta(minutes=1))]

    # a worker claims and dies: the other cannot take the change until the lease runs out
    clock.now = NOW + timedelta(minutes=2)
    one.ingest("customers", pd.DataFrame([{"customer_id": "c-09", "signup_at": "2023-01-02"}]))
    held = one.claim_changes(NOW, worker="w1", lease=lease, limit=10)
    assert list(held) == ["c-09"]
    assert drain(two, "w2") == []
    clock.now += lease + timedelta(seconds=1)
    assert drain(two, "w2") == [("c-09", NOW + timedelta(minutes=2))]
    one.finish_claims(held, worker="w1")  # too late: the claim is w2's now, and done
    assert drain(one, "w1") == []


@pytest.fixture
def served_database(backend, tmp_path_factory, trained_registry, scratch_database):
    """(registry, live database URL) loaded from the trained registry's generated data."""

    from features.db_load import load_dataset
    from features.io import read_dataset

    with trained_registry.active() as registry, \
            scratch_database(backend, registry.root, prefix="liveclaim") as url:
        load_dataset(read_dataset(registry.data), url, now=NOW - timedelta(hours=1))
        yield registry, url


@pytest.mark.slow
def test_two_rescorers_on_one_database_rescore_each_change_exactly_once(served_database,
                                                                        tmp_path):
    from serving.live.fresh import LiveScores
    from serving.live.rescore import Rescorer
    from serving.model_holder import build_state
    from serving.outreach.outbox import Outbox
    from serving.outreach.rules import load_rules

    registry, url = served_database
    state = build_state(model_uri="models:/churnlens@champion", dataset=None,
                        rules=load_rules(), outbox=Outbox(f"sqlite:///{tmp_path / 'o.db'}"))
    clock = Clock(NOW)
    workers = []
    for _ in range(2):
        store = LiveStore(url, clock=clock)
        workers.append(Rescorer(LiveScores(store), batch_size=4))
    customers = pd.read_csv(registry.data / "customers.csv", dtype=str)["customer_id"]
    changed = customers.iloc[:30].tolist()
    try:
        writer = workers[0].live.store
        writer.ingest("events", pd.DataFrame({
            "customer_id": changed, "occurred_at": (NOW - timedelta(minutes=30)).isoformat(),
            "event_type": "support_ticket"}))
        stamps = writer.stamps(changed)
        side_by_side(*[lambda w=w: w.run_once(state) for w in workers])
        rescored = Counter(pair for w in workers for pair in w.stats.rescored)
        assert rescored == Counter(stamps.items()), \
            "every changed customer is rescored once, by one worker, and no one else is"

        clock.now = NOW + timedelta(minutes=1)
        again = changed[:5]
        writer.ingest("events", pd.DataFrame({
            "customer_id": again, "occurred_at": (NOW - timedelta(minutes=1)).isoformat(),
            "event_type": "session"}))
        before = [len(w.stats.rescored) for w in workers]
        side_by_side(*[lambda w=w: w.run_once(state) for w in workers])
        second = Counter(pair for w, n in zip(workers, before, strict=True)
                         for pair in w.stats.rescored[n:])
        assert second == Counter(writer.stamps(again).items())
    finally:
        for worker in workers:
            worker.live.store.close()


@pytest.fixture
def empty_database(backend, tmp_path, scratch_database, live_tables):
    """A fresh live database with the contract tables and no rows."""
    with scratch_database(backend, tmp_path, prefix="livepoll") as url:
        live_tables.create(url)
        yield url


@pytest.fixture
def serving_state(bundle_dir, tmp_path):
    """The fast test model with the built-in rules and an outbox of its own."""
    from serving.model_holder import build_state
    from serving.outreach.outbox import Outbox
    from serving.outreach.rules import load_rules

    return build_state(model_uri=str(bundle_dir), dataset=None, rules=load_rules(),
                       outbox=Outbox(f"sqlite:///{tmp_path / 'outbox.db'}"))


def _activity(store: LiveStore, customers: list[str], at: datetime) -> None:
    store.ingest("customers", pd.DataFrame({"customer_id": customers,
                                            "signup_at": "2023-01-01"}))
    store.ingest("events", pd.DataFrame({"customer_id": customers, "event_type": "session",
                                         "occurred_at": (at - timedelta(hours=1)).isoformat()}))


def test_a_poll_reads_only_the_changes_since_its_last_look(empty_database, serving_state):
    """Rows of ``customer_changes`` each poll reads: the first poll sweeps the overlap, later
    ones start at the last look less the commit grace, and a change committed later than
    that (a slow transaction) is found by the next sweep; each change is rescored once."""
    from serving.live.fresh import LiveScores
    from serving.live.rescore import Rescorer

    clock = Clock(NOW)
    store = LiveStore(empty_database, clock=clock)
    rescorer = Rescorer(LiveScores(store), commit_grace=timedelta(seconds=5),
                        sweep_every=timedelta(minutes=1), batch_size=8)
    reads: list[int] = []

    def poll(at: datetime) -> int:
        clock.now = at
        seen = rescorer.stats.changes_read
        done = rescorer.run_once(serving_state)
        reads.append(rescorer.stats.changes_read - seen)
        return done

    try:
        first = [f"a-{i:02d}" for i in range(20)]
        _activity(store, first, NOW)
        assert poll(NOW) == 20                                  # the first poll: a sweep
        # the next polls start 5 s before the previous look: the 20 are read (not
        # rescored) again until a look 5 s after them
        assert poll(NOW + timedelta(seconds=2)) == 0
        assert poll(NOW + timedelta(seconds=10)) == 0
        assert poll(NOW + timedelta(seconds=11)) == 0           # nothing new: nothing read
        _activity(store, ["b-00", "b-01", "b-02"], clock.now)
        assert poll(NOW + timedelta(seconds=11)) == 3           # only the new changes
        assert poll(NOW + timedelta(seconds=30)) == 0
        # a transaction stamped at +12 s that commits only after the watermark passed it
        late = LiveStore(empty_database, clock=Clock(NOW + timedelta(seconds=12)))
        _activity(late, ["late-0"], NOW + timedelta(seconds=12))
        late.close()
        assert poll(NOW + timedelta(seconds=40)) == 0, "stamped before the watermark: missed"
        assert poll(NOW + timedelta(seconds=61)) == 1, "the minute's sweep finds it"
        assert reads == [20, 20, 20, 0, 3, 3, 0, 24], reads
        assert rescorer.stats.sweeps == 2 and rescorer.stats.polls == len(reads)
        rescored = Counter(customer for customer, _ in rescorer.stats.rescored)
        assert rescored == Counter([*first, "b-00", "b-01", "b-02", "late-0"]), \
            "every change rescored exactly once"
    finally:
        store.close()


def test_an_empty_database_is_read_whole_once_until_something_is_written(empty_database,
                                                                         serving_state):
    from serving.live.fresh import LiveScores

    clock = Clock(NOW)
    store = LiveStore(empty_database, clock=clock)
    live = LiveScores(store)
    try:
        for _ in range(3):
            assert live.build_base(serving_state) is None
        assert live.builds == 1, "nothing was written: the whole read is not repeated"
        _activity(store, ["c-1", "c-2"], NOW)
        base = live.build_base(serving_state)
        assert live.builds == 2 and base is not None
        assert {"c-1", "c-2"} <= set(base.features.index)
        assert live.build_base(serving_state) is base and live.builds == 2
    finally:
        store.close()


def test_a_first_load_is_not_rescored_but_a_later_changed_load_is(empty_database,
                                                                  generated_ecommerce):
    """A first load is history in bulk: its customers are marked rescored. A later load of
    changed files (an order returned) is behaviour: that customer is claimable."""
    from features.db_load import load_dataset
    from features.io import read_dataset

    data = read_dataset(generated_ecommerce(customers=60, seed=12))
    load_dataset(data, empty_database, now=NOW - timedelta(minutes=2))
    store = LiveStore(empty_database, clock=Clock(NOW))
    try:
        since = NOW - timedelta(hours=1)
        assert len(store.changed_since(since)) == 60
        assert store.claim_changes(since, worker="w", lease=timedelta(minutes=5),
                                   limit=100) == {}, "a first load is not rescored"
        orders = data.dataset.orders
        assert orders is not None
        row = orders[orders["status"] == "completed"].index[0]
        changed = orders.copy()
        changed.loc[row, "status"] = "returned"
        reloaded = type(data)(dataset=type(data.dataset)(
            customers=data.dataset.customers, orders=changed, events=data.dataset.events,
            subscriptions=data.dataset.subscriptions), rejects=data.rejects,
            rows_read=data.rows_read)
        report = load_dataset(reloaded, empty_database, now=NOW - timedelta(minutes=1))
        assert report.updated["orders"] == 1
        claimed = store.claim_changes(since, worker="w", lease=timedelta(minutes=5), limit=100)
        assert list(claimed) == [str(orders.loc[row, "customer_id"])]
    finally:
        store.close()
