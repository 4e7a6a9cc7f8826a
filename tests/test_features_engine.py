"""The Dask engine gives exactly the local result; the `features` command writes it."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.contract import validate_tables
from features.engine import compute_features, partition_dataset, partition_of
from features.generate import generate_dataset
from features.io import write_dataset


@pytest.fixture(scope="module")
def dataset():
    data = generate_dataset(customers=400, seed=8, end=date(2024, 12, 31), kind="mixed")
    return validate_tables(data.tables).dataset


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as local:
        yield local


def test_partitions_hold_all_rows_of_their_customers(dataset):
    parts = partition_dataset(dataset, partitions=3)
    assert sum(len(p.customers) for p in parts) == len(dataset.customers)
    assert sum(len(p.events) for p in parts) == len(dataset.events)
    for number, part in enumerate(parts):
        for name in ("customers", "orders", "events", "subscriptions"):
            ids = part.table(name)["customer_id"]
            assert (partition_of(ids.to_numpy(), 3) == number).all()


def test_partition_of_is_stable():
    ids = ["C000001", "C000002", "x"]
    assert partition_of(ids, 7).tolist() == partition_of(list(ids), 7).tolist()
    assert set(partition_of(ids, 7)) <= set(range(7))


def test_dask_equals_local(dataset, cluster):
    from distributed import Client

    as_of = pd.Timestamp("2024-06-15")
    local = compute_features(dataset, as_of=as_of, engine="local")
    with Client(cluster) as client:
        distributed = compute_features(dataset, as_of=as_of, engine="dask", client=client,
                                       partitions=5)
    pd.testing.assert_frame_equal(distributed, local)


def test_dask_by_scheduler_address(dataset, cluster):
    as_of = pd.Timestamp("2024-02-01")
    local = compute_features(dataset, as_of=as_of, engine="local")
    seen = []
    remote = compute_features(dataset, as_of=as_of, engine="dask",
                              scheduler=cluster.scheduler_address, partitions=3,
                              progress=lambda done, total: seen.append((done, total)))
    pd.testing.assert_frame_equal(remote, local)
    assert seen[-1] == (3, 3)


def test_unknown_engine(dataset, tiny_as_of):
    with pytest.raises(ValueError, match="local, dask"):
        compute_features(dataset, as_of=tiny_as_of, engine="spark")


def test_features_command_writes_the_table(tmp_path, tiny_tables):
    from churnlens import build_app

    write_dataset(tiny_tables(), tmp_path / "data")
    out = tmp_path / "features.parquet"
    result = CliRunner().invoke(build_app(), ["features", "--data", str(tmp_path / "data"),
                                              "--as-of", "2024-07-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert table["customer_id"].tolist() == list("ABCDFGH")
    assert table.set_index("customer_id").at["A", "days_since_last_order"] == 20
    assert "7 customers" in result.output


def test_features_command_rejects_bad_options(tmp_path, tiny_tables):
    from churnlens import build_app

    write_dataset(tiny_tables(), tmp_path / "data")
    app = build_app()
    bad_engine = CliRunner().invoke(app, ["features", "--data", str(tmp_path / "data"),
                                          "--out", str(tmp_path / "f.csv"), "--engine", "spark"])
    assert bad_engine.exit_code == 2 and "local, dask" in bad_engine.output
    bad_date = CliRunner().invoke(app, ["features", "--data", str(tmp_path / "data"),
                                        "--out", str(tmp_path / "f.csv"), "--as-of", "July"])
    assert bad_date.exit_code == 2 and "YYYY-MM-DD" in bad_date.output
    missing = CliRunner().invoke(app, ["features", "--data", str(tmp_path / "nowhere"),
                                       "--out", str(tmp_path / "f.csv")])
    assert missing.exit_code == 2 and "nowhere" in missing.output


def test_dask_with_more_partitions_than_customers(cluster, tiny_dataset, tiny_as_of):
    """Empty partitions are skipped; a missing events table keeps fixed event columns."""
    from distributed import Client

    dataset = tiny_dataset(events=True)
    local = compute_features(dataset, as_of=tiny_as_of, event_types=["login"])
    with Client(cluster) as client:
        distributed = compute_features(dataset, as_of=tiny_as_of, engine="dask", client=client,
                                       partitions=16, event_types=["login"])
    pd.testing.assert_frame_equal(distributed, local)
    assert "days_since_last_login" in distributed.columns
