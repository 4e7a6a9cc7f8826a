"""A database as the dataset: `churnlens load`, then every reader sees what the files hold.

Runs on SQLite always and on PostgreSQL when CHURNLENS_TEST_POSTGRES_URL is set
(each test in a schema of its own).
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest
from sqlalchemy import create_engine, func, insert, select, text

from features.contract import DataContractError, validate_table
from features.database import contract_schema, event_keys, keyed_rows, reflect_schema
from features.db_load import load_dataset
from features.io import read_dataset
from features.pipeline import build_features

NOW = datetime(2026, 7, 1, 12, 0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_dataset):
    """A clean generated dataset, and a copy with rows the contract rejects."""
    clean = small_dataset(tmp_path_factory.mktemp("clean"))
    dirty = tmp_path_factory.mktemp("dirty")
    for path in clean.glob("*.csv"):
        (dirty / path.name).write_text(path.read_text())
    with open(dirty / "orders.csv", "a") as handle:
        handle.write("BAD1,C000001,not-a-date,10,completed,0,1\n")
        handle.write("BAD2,NOBODY,2025-01-01 10:00:00,10,completed,0,1\n")
    with open(dirty / "events.csv", "a") as handle:
        handle.write("C000001,2025-01-01 10:00:00,session,-3\n")
    return {"clean": clean, "dirty": dirty}


@pytest.fixture
def url(backend, tmp_path, scratch_database):
    with scratch_database(backend, tmp_path, prefix="source") as found:
        yield found


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        schema = reflect_schema(engine)
        with engine.connect() as connection:
            return {name: connection.execute(
                select(func.count()).select_from(schema.table(name))).scalar_one()
                for name in ("customers", "orders", "events", "subscriptions")}
    finally:
        engine.dispose()


def test_features_from_the_database_equal_those_from_the_files(files, url):
    from_files = read_dataset(files["clean"])
    load_dataset(from_files, url, now=NOW)
    from_db = read_dataset(url)
    assert from_db.rows_read == from_files.rows_read, "every loaded row is read back"
    assert from_db.rejects.empty
    as_of = from_files.dataset.default_as_of()
    assert from_db.dataset.default_as_of() == as_of
    expected = build_features(from_files.dataset, as_of=as_of).sort_index()
    got = build_features(from_db.dataset, as_of=as_of).sort_index()
    pd.testing.assert_frame_equal(got, expected, obj="features from the database")


def test_rows_at_or_after_as_of_change_nothing(files, url):
    validation = read_dataset(files["clean"])
    load_dataset(validation, url, now=NOW)
    as_of = pd.Timestamp("2026-03-01")
    before = build_features(read_dataset(url).dataset, as_of=as_of)
    customer = str(validation.dataset.customers["customer_id"].iloc[0])
    engine = create_engine(url)
    schema = reflect_schema(engine)
    late = pd.DataFrame({"customer_id": [customer, customer], "occurred_at": [as_of, NOW],
                         "event_type": ["session", "support_ticket"], "value": [1.0, None]})
    with engine.begin() as connection:
        connection.execute(insert(schema.orders), [
            {"order_id": "LATE1", "customer_id": customer, "ordered_at": as_of.to_pydatetime(),
             "amount": 500.0, "status": "returned"},
            {"order_id": "LATE2", "customer_id": customer, "ordered_at": NOW, "amount": 9.0,
             "status": "completed"}])
        connection.execute(insert(schema.events), [
            {"event_key": key, **row} for key, row in zip(
                event_keys(late), late.astype(object).where(late.notna(), None)
                .to_dict("records"), strict=True)])
    engine.dispose()
    after = read_dataset(url)
    assert after.rows_read["orders"] == validation.rows_read["orders"] + 2
    pd.testing.assert_frame_equal(build_features(after.dataset, as_of=as_of), before,
                                  obj="features as of T after adding rows at or after T")


def test_load_twice_adds_nothing_and_replace_starts_over(files, url, tmp_path, run_cli):
    first = run_cli("load", "--data", str(files["clean"]), "--into", url)
    assert first.exit_code == 0, first.output
    loaded = _counts(url)
    assert loaded == read_dataset(files["clean"]).rows_read
    again = run_cli("load", "--data", str(files["clean"]), "--into", url)
    assert again.exit_code == 0, again.output
    assert "nothing new" in again.output
    assert _counts(url) == loaded, "a second load of the same files changes nothing"

    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for path in files["clean"].glob("*.csv"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        (fewer / path.name).write_text(frame.head(40).to_csv(index=False))
    without = run_cli("load", "--data", str(fewer), "--into", url)
    assert _counts(url) == loaded, without.output
    replaced = run_cli("load", "--data", str(fewer), "--into", url, "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert _counts(url) == read_dataset(fewer).rows_used, "--replace keeps only the new files"


def test_reloading_files_where_an_order_was_returned_updates_it_and_logs_the_change(
        files, url, tmp_path, run_cli):
    """An order's new status in the files is an update with its change logged, once."""
    assert run_cli("load", "--data", str(files["clean"]), "--into", url).exit_code == 0
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in files["clean"].glob("*.csv"):
        (changed / path.name).write_text(path.read_text())
    orders = pd.read_csv(changed / "orders.csv", dtype=str, keep_default_na=False)
    completed = orders.index[orders["status"] == "completed"]
    order = orders.loc[completed[0]]
    orders.loc[completed[0], "status"] = "returned"
    orders.to_csv(changed / "orders.csv", index=False)

    reload = run_cli("load", "--data", str(changed), "--into", url)
    assert reload.exit_code == 0, reload.output
    assert "updated 1" in reload.output, reload.output
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            status = connection.execute(text("SELECT status FROM orders WHERE order_id = :o"),
                                        {"o": order["order_id"]}).scalar_one()
            logged = connection.execute(text(
                "SELECT order_id, customer_id, from_status, status FROM order_status_changes"
            )).all()
        assert status == "returned", "the reloaded status replaces the stored one"
        assert [tuple(row) for row in logged] == [
            (order["order_id"], order["customer_id"], "completed", "returned")]
        again = run_cli("load", "--data", str(changed), "--into", url)
        assert again.exit_code == 0 and "nothing new" in again.output, again.output
        with engine.connect() as connection:
            assert connection.execute(text(
                "SELECT count(*) FROM order_status_changes")).scalar_one() == 1, \
                "a third load of the same files changes nothing"
    finally:
        engine.dispose()
    stored = read_dataset(url).dataset.orders.set_index("order_id")["status"]
    expected = read_dataset(changed).dataset.orders.set_index("order_id")["status"]
    pd.testing.assert_series_equal(stored.sort_index(), expected.sort_index())


def test_load_accounts_for_rejected_rows(files, url, tmp_path, run_cli):
    rejects = tmp_path / "load.rejects.csv"
    result = run_cli("load", "--data", str(files["dirty"]), "--into", url,
                     "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    validation = read_dataset(files["dirty"])
    for name, read in validation.rows_read.items():
        assert read == validation.rows_used[name] + validation.rows_rejected[name]
    assert validation.rows_rejected == {"customers": 0, "orders": 2, "events": 1,
                                        "subscriptions": 0}
    assert _counts(url) == validation.rows_used, "only the usable rows are loaded"
    written = pd.read_csv(rejects)
    assert sorted(written["reason"].str.split(" ").str[0]) == ["negative", "unknown",
                                                                 "unparseable"]
    assert "orders" in result.output and "2" in result.output


def test_rows_the_contract_rejects_in_the_database_are_reported(files, url):
    load_dataset(read_dataset(files["clean"]), url, now=NOW)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO orders (order_id, customer_id, ordered_at, amount, "
                                "status) VALUES ('NEG', 'C000001', '2025-01-01 10:00:00', "
                                "-5, 'completed'), ('GHOST', 'NOBODY', '2025-01-01 10:00:00', "
                                "5, 'completed')"))
    engine.dispose()
    result = read_dataset(url)
    assert result.rows_rejected["orders"] == 2
    assert result.rows_read["orders"] == result.rows_used["orders"] + 2
    reasons = set(result.rejects["reason"])
    assert {"negative amount", "unknown customer_id (not in customers)"} <= reasons
    assert set(result.rejects["file"]) == {"orders"}, "rejects name the table they came from"


def _crm_schema(url: str) -> None:
    """An existing schema with other names: clients, sales (a SELECT picks web sales)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE clients (client_no VARCHAR(20), joined TIMESTAMP, "
                                "region TEXT)"))
        connection.execute(text("CREATE TABLE sales (sale_no VARCHAR(20), client_no VARCHAR(20),"
                                " sold_on TIMESTAMP, total FLOAT, channel TEXT)"))
        connection.execute(text("INSERT INTO clients VALUES ('A', '2025-01-01 00:00:00', "
                                "'north'), ('B', '2025-02-01 00:00:00', NULL)"))
        connection.execute(text(
            "INSERT INTO sales VALUES ('S1', 'A', '2025-03-01 10:00:00', 20, 'web'), "
            "('S2', 'A', '2025-04-01 10:00:00', 30, 'web'), "
            "('S3', 'B', '2025-05-01 10:00:00', 40, 'store'), "
            "('S4', 'B', '2025-05-02 10:00:00', -1, 'web')"))
    engine.dispose()


def test_a_mapping_reads_an_existing_schema(url, tmp_path, run_cli):
    _crm_schema(url)
    mapping = tmp_path / "tables.yaml"
    mapping.write_text(
        "customers:\n  from: clients\n  columns: {customer_id: client_no, signup_at: joined}\n"
        "orders:\n  from: SELECT * FROM sales WHERE channel = 'web'\n"
        "  columns: {order_id: sale_no, customer_id: client_no, ordered_at: sold_on, "
        "amount: total}\n")
    result = read_dataset(url, tables=mapping)
    assert result.rows_read == {"customers": 2, "orders": 3}
    assert list(result.dataset.orders["order_id"]) == ["S1", "S2"]
    assert result.rejects["file"].tolist() == ["orders (query)"], "the bad web sale is named"
    assert result.dataset.attribute_columns == ["region"], "extra columns are attributes"
    cli = run_cli("validate", "--data", url, "--tables", str(mapping),
                  "--rejects", str(tmp_path / "r.csv"))
    assert cli.exit_code == 0, cli.output
    assert "negative amount" in cli.output


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("customers: crm_people\n", "customers: table 'crm_people' does not exist"),
    ("customers:\n  from: clients\n  columns: {customer_id: client_id}\n",
     "customers.customer_id: column 'client_id' is not in customers (clients)"),
    ("orders:\n  from: sales\n  columns: {amount: amount_eur}\n",
     "orders.amount: column 'amount_eur' is not in orders (sales)"),
    ("orders:\n  from: sales\n  columns: {total: total}\n",
     "orders.columns: 'total' is not a column of the contract's orders"),
    ("order: sales\n", "'order' is not a contract table"),
    ("orders:\n  from: SELECT * FROM no_such_table\n", "orders: the SELECT fails"),
])
def test_a_mapping_that_names_what_is_missing_fails_in_one_line(url, tmp_path, yaml_text,
                                                                message, run_cli):
    _crm_schema(url)
    mapping = tmp_path / "tables.yaml"
    mapping.write_text(yaml_text)
    with pytest.raises(DataContractError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_dataset(url, tables=mapping)
    cli = run_cli("validate", "--data", url, "--tables", str(mapping))
    assert cli.exit_code == 2
    lines = [line for line in cli.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and str(mapping) in lines[0], cli.output


def test_a_database_without_customers_says_so(url):
    engine = create_engine(url)
    schema = contract_schema()
    schema.orders.create(engine)
    engine.dispose()
    with pytest.raises(DataContractError, match="missing required table 'customers'"):
        read_dataset(url)


def test_load_refuses_a_foreign_table_of_a_contract_name(files, url, run_cli):
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE events (customer_id TEXT, occurred_at TIMESTAMP, "
                                "event_type TEXT)"))
    engine.dispose()
    result = run_cli("load", "--data", str(files["clean"]), "--into", url)
    assert result.exit_code == 2
    assert "events: the existing table has no event_key column" in result.output
    assert run_cli("load", "--data", str(files["clean"]), "--into", url,
                   "--replace").exit_code == 0


def test_event_keys_repeat_for_a_replay_and_keep_identical_rows_apart():
    events = pd.DataFrame({"customer_id": ["a", "a", "a"],
                           "occurred_at": pd.to_datetime(["2025-01-01"] * 3),
                           "event_type": ["session", "session", "view"],
                           "value": [1.0, 1.0, None]})
    keys = event_keys(events)
    assert keys.is_unique, "two identical page views stay two rows"
    assert keys.tolist() == event_keys(events.copy()).tolist(), "a replay has the same keys"
    with_ids = events.assign(event_id=["e1", None, ""])
    assert event_keys(with_ids).tolist()[0] == "e1"
    assert event_keys(with_ids).tolist()[1:] == keys.tolist()[1:]


def test_event_and_subscription_keys_are_the_bytes_stored_before():
    """Keys already in databases (and the idempotency of replays against them) depend on
    these exact strings: a faster hash or hex must produce them byte for byte."""
    raw = pd.DataFrame({
        "customer_id": ["C000001", "C000001", "C000001", "Ünïcode-7", "C000002"],
        "occurred_at": ["2025-01-01T10:00:00", "2025-01-01T10:00:00",
                        "2025-03-04T05:06:07.123456", "2024-12-31T23:59:59Z",
                        "2025-01-01T10:00:00"],
        "event_type": ["session", "session", "page_view", "cart_add", "session"],
        "value": [None, None, 2.5, 0.0, None],
        "event_id": [None, None, "", " given ", "e-1"]})
    known = pd.Index(["C000001", "C000002", "Ünïcode-7"])
    events, rejects = validate_table("events", raw, source="events", first_row=0,
                                     known_customers=known)
    assert rejects.empty
    hashed = ["317f610a9c9d0d660531a0bb862fa09d", "317f610a9c9d0d660531a0bb862fa09d#1",
              "ead3b275c431aaeb34b3adf235f533ae"]
    assert keyed_rows("events", events)["event_key"].tolist() == [*hashed, "given", "e-1"]
    assert keyed_rows("events", events.drop(columns="event_id"))["event_key"].tolist() == [
        *hashed, "01783b990cb4782c74e7c772af7ebdfa", "aa1e313f95c7dac069eef4e2cc1f90ab"]
    subscriptions, rejects = validate_table("subscriptions", pd.DataFrame({
        "customer_id": ["C000001", "C000002"], "started_at": ["2025-01-01", "2025-02-03T04:05:06"],
        "ended_at": [None, "2025-06-01"], "plan": ["pro", None], "mrr": [10.0, 5.5]}),
        source="subscriptions", first_row=0, known_customers=known)
    assert rejects.empty
    assert keyed_rows("subscriptions", subscriptions)["subscription_key"].tolist() == [
        "b9aa47b8d195f251eaee9acd47d77ed9", "b44b861940b0b28ad10f323b6338769e"]
