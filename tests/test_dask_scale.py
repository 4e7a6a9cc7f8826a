"""Scale-out on Dask: workers read their own partitions, the driver holds no table.

A generated dataset is partitioned by customer hash; `features` and `score` run one task
per partition on a LocalCluster of worker processes and must equal the local engine on
the unpartitioned dataset, row for row. Faults: a worker killed mid-run, a missing
partition, a foreign hash or count, a scheduler that does not answer.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed.diagnostics.plugin import WorkerPlugin
from typer.testing import CliRunner

from features.contract import validate_tables
from features.engine import compute_features, compute_partitioned_features
from features.generate import generate_dataset
from features.partitioned import (
    PartitionError,
    partition_numbers,
    read_manifest,
    read_partition,
    read_source,
    write_partitioned,
)
from features.pipeline import build_features
from serving.batch import BatchError, run_batch
from serving.partitioned_batch import ScoredPartition, run_partitioned_batch

#: Dask clusters of worker processes and whole train/score runs: the slow tier
pytestmark = pytest.mark.slow

CUSTOMERS = 1200
PARTITIONS = 6
AS_OF = pd.Timestamp("2026-03-01")
CHUNK = 150


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("scale-data")
    generate_dataset(customers=CUSTOMERS, seed=5, end=date(2026, 6, 30), kind="mixed",
                     orders_per_customer=5, events_per_customer=20).write(directory, fmt="csv")
    return directory


@pytest.fixture(scope="module")
def parts_dir(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale-parts") / "parts"
    write_partitioned(read_source(str(data_dir)), str(out), partitions=PARTITIONS)
    return out


@pytest.fixture(scope="module")
def cluster():
    from features.cluster import local_cluster

    with local_cluster(workers=2) as local:
        yield local


@pytest.fixture
def client(cluster):
    from distributed import Client

    with Client(cluster, timeout=120) as connected:
        yield connected


@pytest.fixture(scope="module")
def local_scores(scorer, data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale-local") / "scores.parquet"
    run_batch(data=data_dir, out=out, scorer=scorer, model_uri="test", chunk_size=CHUNK,
              workers=1)
    return out


def _copy(parts_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "parts"
    shutil.copytree(parts_dir, copy)
    return copy


# -- partitioning -------------------------------------------------------------------------


def test_the_hash_is_blake2b_of_the_utf8_id_modulo_the_count():
    ids = ["C000001", "ünïcode-id", "42"]
    expected = [int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(),
                               "big") % 7 for i in ids]
    assert partition_numbers(ids, 7).tolist() == expected


def test_every_table_of_a_customer_is_in_its_partition(data_dir, parts_dir):
    manifest = read_manifest(str(parts_dir))
    whole = read_source(str(data_dir))
    assert manifest.partitions == PARTITIONS
    assert (manifest.hash, manifest.hash_version) == ("blake2b-64", 1)
    for name in manifest.tables:
        assert sum(part[name] for part in manifest.rows) == len(whole.dataset.table(name)), name
    seen = 0
    for number in range(PARTITIONS):
        part = read_partition(str(parts_dir), number, manifest).dataset
        for name in part.present_tables:
            ids = part.table(name)["customer_id"].to_numpy()
            assert (partition_numbers(ids, PARTITIONS) == number).all(), (name, number)
            assert len(ids) == manifest.rows[number][name]
        seen += len(part.customers)
    assert seen == CUSTOMERS
    assert set(manifest.schema) == set(manifest.tables)


def test_partition_accounts_for_rejected_rows(data_dir, tmp_path):
    from churnlens import build_app

    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    orders = pd.read_csv(broken / "orders.csv", dtype=str, keep_default_na=False)
    orders.loc[3, "amount"] = "lots"
    orders.to_csv(broken / "orders.csv", index=False)
    out = tmp_path / "parts"
    result = CliRunner().invoke(build_app(), ["partition", "--data", str(broken), "--out",
                                              str(out), "--partitions", "3"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(str(out))
    assert manifest.rows_rejected["orders"] == 1
    assert manifest.rows_read["orders"] == len(orders)
    assert sum(p["orders"] for p in manifest.rows) + 1 == len(orders)
    rejects = pd.read_csv(out / "rejects.csv")
    assert rejects.iloc[0]["row"] == 5 and rejects.iloc[0]["column"] == "amount"


# -- workers read, the driver coordinates ----------------------------------------------------


def test_features_on_worker_processes_equal_the_local_engine(data_dir, parts_dir, client,
                                                             tmp_path):
    """Each partition's features built in chunks of 60 customers (about 200 per partition)
    are the local engine's, categorical levels included."""
    local = compute_features(read_source(str(data_dir)).dataset, as_of=AS_OF)
    out = tmp_path / "features.parquet"
    run = compute_partitioned_features(str(parts_dir), out=str(out), as_of=AS_OF,
                                       client=client, chunk_size=60)
    assert run.customers == len(local)
    pd.testing.assert_frame_equal(pd.read_parquet(out), local.reset_index())
    assert not (tmp_path / "features.parquet.parts").exists()


def test_features_command_with_the_dask_engine(data_dir, parts_dir, cluster, tmp_path):
    from churnlens import build_app

    local = compute_features(read_source(str(data_dir)).dataset, as_of=AS_OF)
    out = tmp_path / "features.parquet"
    result = CliRunner().invoke(build_app(), [
        "features", "--data", str(parts_dir), "--out", str(out), "--as-of", "2026-03-01",
        "--engine", "dask", "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), local.reset_index())


def test_scores_on_worker_processes_equal_the_local_engine(scorer, parts_dir, client,
                                                           local_scores, tmp_path):
    out = tmp_path / "scores.parquet"
    summary = run_partitioned_batch(data=str(parts_dir), out=str(out), scorer=scorer,
                                    model_uri="test", client=client, chunk_size=CHUNK)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(local_scores))
    assert summary.rows_in == summary.rows_scored + summary.rows_rejected == CUSTOMERS
    local_rejects = local_scores.with_name("scores.rejects.csv").read_text()
    assert (tmp_path / "scores.rejects.csv").read_text() == local_rejects
    assert not (tmp_path / "scores.parquet.parts").exists()


def test_the_local_clusters_workers_keep_dasks_housekeeping_quiet(client):
    """Dask's default ticks, profiler and monitors took ~20% of a core from the scoring."""
    from features.cluster import QUIET_HOUSEKEEPING

    def settings() -> dict[str, object]:
        import dask

        return {key: dask.config.get(key) for key in QUIET_HOUSEKEEPING}

    for worker, values in client.run(settings).items():
        assert values == QUIET_HOUSEKEEPING, worker


def test_the_driver_never_reads_a_partition_or_a_table(scorer, parts_dir, client,
                                                       local_scores, tmp_path, monkeypatch):
    """The driver process cannot read data at all here; workers (other processes) can."""
    import features.contract
    import features.io
    import features.partitioned

    def forbidden(*args, **kwargs):
        raise AssertionError("the driver read a table")

    import features.sorted_merge
    import serving.partitioned_batch

    for module, name in ((features.partitioned, "read_partition"),
                         (features.io, "read_dataset"), (features.contract, "validate_tables"),
                         # the merge of the parts runs on a worker too
                         (features.sorted_merge, "merged_batches"),
                         (features.sorted_merge, "write_merged"),
                         (serving.partitioned_batch, "merged_batches"),
                         (serving.partitioned_batch, "write_merged")):
        monkeypatch.setattr(module, name, forbidden)
    gathered: list[object] = []
    import features.cluster

    original = features.cluster.run_partitions

    def spy(*args, **kwargs):
        results, failures = original(*args, **kwargs)
        gathered.extend(results.values())
        return results, failures

    monkeypatch.setattr("serving.partitioned_batch.run_partitions", spy)
    out = tmp_path / "scores.parquet"
    run_partitioned_batch(data=str(parts_dir), out=str(out), scorer=scorer, model_uri="test",
                          client=client, chunk_size=CHUNK)
    assert len(gathered) == PARTITIONS
    for result in gathered:
        assert isinstance(result, ScoredPartition), type(result)
        assert len(pickle.dumps(result)) < 2_000, "a worker sent back more than counts"
    assert sum(r.customers for r in gathered) == CUSTOMERS
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(local_scores))


def test_a_partition_is_scored_chunk_by_chunk_into_its_part(scorer, parts_dir, local_scores,
                                                            tmp_path, monkeypatch):
    """Inside a partition, customers are scored a chunk at a time and each chunk's rows
    streamed to the part: chunks of 37 customers (about 5 per partition) still give the
    local engine's file, row for row."""
    import serving.batch
    import serving.partitioned_batch

    monkeypatch.setattr(serving.partitioned_batch, "PARTITION_CHUNK", 37)
    scored: list[int] = []
    original = serving.batch.score_chunk

    def counting(scorer, dataset, **kwargs):
        scored.append(len(dataset.customers))
        return original(scorer, dataset, **kwargs)

    monkeypatch.setattr(serving.partitioned_batch, "score_chunk", counting)
    out = tmp_path / "scores.parquet"
    run_partitioned_batch(data=str(parts_dir), out=str(out), scorer=scorer, model_uri="test",
                          client=None, chunk_size=10_000)
    assert max(scored) == 37 and len(scored) > 4 * PARTITIONS, scored
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(local_scores))


def test_the_driver_does_not_merge_the_feature_parts(data_dir, parts_dir, client, tmp_path,
                                                     monkeypatch):
    import features.engine
    import features.sorted_merge

    def forbidden(*args, **kwargs):
        raise AssertionError("the driver read a table")

    for module, name in ((features.sorted_merge, "merged_batches"),
                         (features.sorted_merge, "write_merged"),
                         (features.engine, "write_merged"),
                         (features.engine, "read_partition")):
        monkeypatch.setattr(module, name, forbidden)
    out = tmp_path / "features.parquet"
    compute_partitioned_features(str(parts_dir), out=str(out), as_of=AS_OF, client=client)
    monkeypatch.undo()
    local = compute_features(read_source(str(data_dir)).dataset, as_of=AS_OF)
    pd.testing.assert_frame_equal(pd.read_parquet(out), local.reset_index())


def test_an_in_memory_fsspec_dataset(data_dir, scorer, local_scores):
    """Partition into fsspec's memory filesystem and score from it, output there too."""
    import fsspec
    from distributed import Client

    from features.cluster import local_cluster

    memory = fsspec.filesystem("memory")
    for path in data_dir.iterdir():
        memory.pipe(f"/source/{path.name}", path.read_bytes())
    write_partitioned(read_source("memory://source"), "memory://parts", partitions=4)
    local = compute_features(read_source(str(data_dir)).dataset, as_of=AS_OF)
    # memory:// lives in this process, so the workers are threads of it
    with (local_cluster(workers=2, processes=False) as cluster,
          Client(cluster) as client):
        compute_partitioned_features("memory://parts", out="memory://out/features.parquet",
                                     as_of=AS_OF, client=client)
        run_partitioned_batch(data="memory://parts", out="memory://out/scores.parquet",
                              scorer=scorer, model_uri="test", client=client,
                              chunk_size=CHUNK)
    with memory.open("/out/features.parquet", "rb") as handle:
        pd.testing.assert_frame_equal(pd.read_parquet(handle), local.reset_index())
    with memory.open("/out/scores.parquet", "rb") as handle:
        pd.testing.assert_frame_equal(pd.read_parquet(handle), pd.read_parquet(local_scores))
    assert not memory.exists("/out/scores.parquet.parts")
    memory.rm("/", recursive=True)


def test_partitions_without_customers_are_fine(tmp_path, tiny_tables, tiny_as_of):

    tiny = validate_tables(tiny_tables())
    write_partitioned(tiny, str(tmp_path / "parts"), partitions=16)
    manifest = read_manifest(str(tmp_path / "parts"))
    assert sum(1 for part in manifest.rows if part["customers"] == 0) >= 8
    out = tmp_path / "features.parquet"
    compute_partitioned_features(str(tmp_path / "parts"), out=str(out), as_of=tiny_as_of,
                                 client=None)
    local = compute_features(tiny.dataset, as_of=tiny_as_of)
    pd.testing.assert_frame_equal(pd.read_parquet(out), local.reset_index())


# -- faults -------------------------------------------------------------------------------


class _KillOnce(WorkerPlugin):
    """A worker plugin that kills its worker process when partition 2 starts executing,
    once (a marker file tells the restarted workers it has been done)."""

    name = "kill-once"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker) -> None:
        self.worker = worker

    def transition(self, key, start, finish, **kwargs) -> None:
        import os

        ours = "score" in str(key) and str(key).endswith("part-00002")
        if finish == "executing" and ours and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)


def test_the_model_survives_the_loss_of_every_worker_holding_it(cluster):
    """Scattered data has no recipe: lost with its last holder, every task needing it was
    cancelled ("already forgotten"). The shared model is a task, computed again."""
    from distributed import Client

    from features.cluster import share

    with Client(cluster, timeout=120) as connected:
        model = share(connected, {"trees": list(range(1000))}, name="test-model")
        assert connected.submit(len, model, pure=False).result() == 1
        holders = connected.who_has([model])[model.key]
        assert holders
        connected.restart_workers(list(holders))
        again = connected.submit(lambda value: len(value["trees"]), model, pure=False)
        assert again.result(timeout=120) == 1000


def test_a_worker_killed_mid_run_leaves_complete_identical_output(scorer, parts_dir,
                                                                   local_scores, tmp_path):
    from distributed import Client

    from features.cluster import local_cluster

    marker = tmp_path / "killed"
    with (local_cluster(workers=2) as cluster, Client(cluster, timeout=120) as client):
        client.register_plugin(_KillOnce(str(marker)))
        out = tmp_path / "scores.parquet"
        summary = run_partitioned_batch(data=str(parts_dir), out=str(out), scorer=scorer,
                                        model_uri="test", client=client, chunk_size=CHUNK)
    assert marker.exists(), "the worker running partition 2 was not killed"
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(local_scores))
    assert summary.rows_scored + summary.rows_rejected == CUSTOMERS


def test_a_missing_partition_stops_the_run_and_resume_finishes_the_rest(
        scorer, parts_dir, local_scores, tmp_path):
    parts = _copy(parts_dir, tmp_path)
    hidden = tmp_path / "hidden"
    shutil.move(parts / "part-00003", hidden)
    out = tmp_path / "scores.parquet"
    options = {"data": str(parts), "out": str(out), "scorer": scorer, "model_uri": "test",
               "client": None, "chunk_size": CHUNK}
    with pytest.raises(PartitionError, match=r"partition 3 \(.*part-00003\): missing"):
        run_partitioned_batch(**options)
    assert not out.exists()
    with pytest.raises(BatchError, match=r"1 of 6 partitions could not be scored.*partition 3"
                       r".*5 finished and are kept"):
        run_partitioned_batch(**options, resume=True)
    assert not out.exists()
    shutil.move(hidden, parts / "part-00003")
    summary = run_partitioned_batch(**options, resume=True)
    assert summary.chunks_resumed == 5
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(local_scores))


def test_an_unreadable_partition_is_named(parts_dir, tmp_path):
    parts = _copy(parts_dir, tmp_path)
    (parts / "part-00001" / "orders-00000.parquet").write_bytes(b"not parquet at all")
    manifest = read_manifest(str(parts))
    with pytest.raises(PartitionError, match=r"partition 1 .*cannot be read"):
        read_partition(str(parts), 1, manifest)


def test_partitions_of_another_hash_or_count_are_refused(parts_dir, tmp_path):
    parts = _copy(parts_dir, tmp_path)
    manifest_path = parts / "manifest.json"
    values = json.loads(manifest_path.read_text())
    with pytest.raises(PartitionError, match="has 6 partitions, not 4"):
        read_manifest(str(parts), partitions=4)
    manifest_path.write_text(json.dumps({**values, "hash": "xxhash64"}))
    with pytest.raises(PartitionError, match="written with hash xxhash64 version 1"):
        read_manifest(str(parts))
    # right manifest, wrong contents: the customers of partition 0 sit in partition 1
    manifest_path.write_text(json.dumps(values))
    for path in (parts / "part-00000").iterdir():
        shutil.copy(path, parts / "part-00001" / path.name.replace("-00000", "-00001"))
    with pytest.raises(PartitionError, match=r"partition 1 .*belongs to partition 0 under "
                                             r"blake2b-64 mod 6"):
        read_partition(str(parts), 1, read_manifest(str(parts)))
    (parts / "part-00006").mkdir()
    with pytest.raises(PartitionError, match="part-00006 exists too"):
        read_manifest(str(parts))


def test_a_scheduler_that_does_not_answer_is_one_line(parts_dir, tmp_path):
    import socket

    from churnlens import build_app

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(build_app(), [
        "features", "--data", str(parts_dir), "--out", str(tmp_path / "f.parquet"),
        "--engine", "dask", "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "2"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"tcp://127.0.0.1:{port} did not answer within 2 s" in lines[0], \
        result.output


def test_score_command_on_a_partitioned_dataset(bundle_dir, parts_dir, local_scores, tmp_path,
                                                monkeypatch):
    from churnlens import build_app

    monkeypatch.setenv("CHURNLENS_NO_PROGRESS", "1")
    bundle = bundle_dir
    out = tmp_path / "scores.parquet"
    result = CliRunner().invoke(build_app(), [
        "score", "--data", str(parts_dir), "--out", str(out), "--model", str(bundle),
        "--chunk-size", str(CHUNK)])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(local_scores))

    outbox = tmp_path / "outbox.db"
    result = CliRunner().invoke(build_app(), [
        "score", "--data", str(parts_dir), "--out", str(out), "--model", str(bundle),
        "--chunk-size", str(CHUNK), "--outreach", "--outbox-url", f"sqlite:///{outbox}"])
    assert result.exit_code == 0, result.output
    assert f"outbox: {CUSTOMERS:,} scores" in result.output, result.output


def test_a_plain_dataset_on_dask_gets_the_model_as_a_task_not_scattered(
        scorer, data_dir, cluster, local_scores, tmp_path, monkeypatch):
    """Scattered data has no recipe (lost with its last holder); the plain-dataset path
    shares the model the way the partitioned one does."""
    from distributed import Client

    def no_scatter(*args, **kwargs):
        raise AssertionError("the model was scattered")

    monkeypatch.setattr(Client, "scatter", no_scatter)
    out = tmp_path / "scores.parquet"
    run_batch(data=data_dir, out=out, scorer=scorer, model_uri="test", chunk_size=CHUNK,
              engine="dask", scheduler=cluster.scheduler_address)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(local_scores))


def test_score_with_a_scheduler_that_does_not_answer_is_one_line(bundle_dir, data_dir,
                                                                  parts_dir, tmp_path):
    import socket

    from churnlens import build_app

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for data in (data_dir, parts_dir):
        result = CliRunner().invoke(build_app(), [
            "score", "--data", str(data), "--out", str(tmp_path / "s.parquet"),
            "--model", str(bundle_dir), "--engine", "dask",
            "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "2"],
            env={"CHURNLENS_NO_PROGRESS": "1"})
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and f"127.0.0.1:{port} did not answer within 2 s" in lines[0], \
            (data, result.output)


def _outbox_rows(url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The outbox's scores and actions, without what depends on the wall clock or a uuid."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        scores = pd.read_sql_table("scores", engine).drop(columns=["scored_at"])
        actions = pd.read_sql_table("actions", engine)[
            ["customer_id", "rule", "action", "channel", "payload", "why", "period",
             "cooldown_days", "as_of", "model_version", "status", "assignment"]]
    finally:
        engine.dispose()
    for frame in (scores, actions):
        for column in frame.columns:
            if frame[column].map(lambda v: isinstance(v, dict | list)).any():
                frame[column] = frame[column].map(lambda v: json.dumps(v, sort_keys=True))
    key = ["customer_id", "model_version", "as_of"]
    return (scores.sort_values(key).reset_index(drop=True),
            actions.sort_values([*key[:1], "rule"]).reset_index(drop=True))


def test_outreach_on_worker_processes_writes_the_local_engines_outbox(
        scorer, data_dir, parts_dir, client, tmp_path):
    """`score --outreach` on a partitioned dataset: each worker writes its partition's scores
    and actions; the outbox ends up as the local engine's, and a re-run (a lost worker's
    partitions run again) duplicates nothing."""
    from serving.outreach.outbox import Outbox

    local_url = f"sqlite:///{tmp_path / 'local.db'}"
    outbox = Outbox(local_url)
    try:
        local = run_batch(data=data_dir, out=tmp_path / "local.parquet", scorer=scorer,
                          model_uri="test", chunk_size=CHUNK, workers=1, outbox=outbox,
                          as_of=AS_OF)
    finally:
        outbox.close()
    dask_url = f"sqlite:///{tmp_path / 'dask.db'}"
    for _ in range(2):
        summary = run_partitioned_batch(data=str(parts_dir), out=str(tmp_path / "d.parquet"),
                                        scorer=scorer, model_uri="test", client=client,
                                        chunk_size=CHUNK, as_of=AS_OF, outbox_url=dask_url)
    assert summary.outreach["scores"] == local.outreach["scores"] > 0
    assert summary.outreach["actions"] == 0, "the second run created actions again"
    expected_scores, expected_actions = _outbox_rows(local_url)
    scores, actions = _outbox_rows(dask_url)
    assert len(expected_actions) == local.outreach["actions"] > 0
    pd.testing.assert_frame_equal(scores, expected_scores)
    pd.testing.assert_frame_equal(actions, expected_actions)


def test_workers_need_an_outbox_they_can_reach(scorer, parts_dir, tmp_path, monkeypatch):
    from serving.partitioned_batch import worker_outbox_url

    with pytest.raises(BatchError, match="in-memory SQLite outbox is private to one process"):
        run_partitioned_batch(data=str(parts_dir), out=str(tmp_path / "s.parquet"),
                              scorer=scorer, model_uri="test", client=None,
                              outbox_url="sqlite://")
    assert not list(tmp_path.iterdir()), "the refused run left files behind"
    monkeypatch.chdir(tmp_path)
    assert worker_outbox_url("sqlite:///outbox.db") == f"sqlite:///{tmp_path / 'outbox.db'}"
    server = "postgresql+psycopg://user:secret@db.example:5432/churn"
    assert worker_outbox_url(server) == server


# -- training snapshots ---------------------------------------------------------------------


@pytest.mark.parametrize("definition", ["inactivity", "activity"])
def test_training_snapshots_per_partition_equal_the_local_engine(data_dir, parts_dir, client,
                                                                 definition):
    """One task per partition builds its customers' snapshot rows; the driver gets day counts
    and weekly sums first, then the rows, and they equal the whole dataset's."""
    from features.partitioned_snapshots import build_partitioned_training_set
    from features.snapshots import build_training_set

    settings = {"as_of": AS_OF, "horizon_days": 90, "clv_horizon_days": 365,
                "definition": definition, "step_days": 30, "max_snapshots": 6}
    local = build_training_set(read_source(str(data_dir)).dataset, **settings)
    partitioned = build_partitioned_training_set(str(parts_dir), client=client, **settings)
    assert partitioned.snapshot_dates == local.snapshot_dates
    assert partitioned.notes == local.notes
    assert (partitioned.label_horizon_days, partitioned.clv_label_horizon_days,
            partitioned.clv_scale, partitioned.event_types) == (
        local.label_horizon_days, local.clv_label_horizon_days, local.clv_scale,
        local.event_types)
    assert partitioned.business_season is not None and local.business_season is not None
    assert partitioned.business_season.active == local.business_season.active
    assert partitioned.business_season.revenue == pytest.approx(local.business_season.revenue,
                                                                rel=1e-12)
    pd.testing.assert_frame_equal(partitioned.frame, local.frame, check_exact=False,
                                  rtol=1e-12)


def test_a_short_history_plans_the_same_snapshots_from_day_counts(data_dir, parts_dir):
    """The 10 % entry date decides the short-history plan (and its note) from its day and
    whether it lies past the day's start; counts per day give both."""
    from features.partitioned_snapshots import build_partitioned_training_set
    from features.snapshots import build_training_set

    dataset = read_source(str(data_dir)).dataset
    first = dataset.orders["ordered_at"].min()
    as_of = (first + pd.Timedelta(days=120)).normalize()
    settings = {"as_of": as_of, "horizon_days": 90, "step_days": 30, "max_snapshots": 6}
    local = build_training_set(dataset, **settings)
    assert any("short history" in note for note in local.notes), local.notes
    partitioned = build_partitioned_training_set(str(parts_dir), client=None, **settings)
    assert partitioned.notes == local.notes
    assert partitioned.snapshot_dates == local.snapshot_dates
    pd.testing.assert_frame_equal(partitioned.frame, local.frame, check_exact=False,
                                  rtol=1e-12)


def test_training_on_a_partitioned_dataset_fits_the_local_engines_model(data_dir, parts_dir,
                                                                        client, fast_params):
    """`train` on partitions: the gathered training set is the whole dataset's, so the
    bundle fitted on it scores held-out rows as the local engine's does."""
    from dataclasses import replace

    from training.horizon import needs_anchor
    from training.partitioned import fit_partitioned
    from training.run import fit_on_dataset

    params = replace(fast_params, clv_horizon_days=90)  # full windows: no horizon anchor either way
    dataset = read_source(str(data_dir)).dataset
    local, local_set = fit_on_dataset(dataset, as_of=AS_OF, params=params)
    assert not any(needs_anchor(local_set))
    fit, training_set, profile = fit_partitioned(str(parts_dir), client=client, as_of=AS_OF,
                                                 params=params)
    pd.testing.assert_frame_equal(training_set.frame, local_set.frame, check_exact=False,
                                  rtol=1e-12)
    assert fit.metrics.keys() == local.metrics.keys()
    for name, value in local.metrics.items():
        assert fit.metrics[name] == pytest.approx(value, rel=1e-9, nan_ok=True), name
    assert profile["customers"] == CUSTOMERS and profile["partitions"] == PARTITIONS
    assert profile["training_rows"] == len(local_set.frame)


def test_short_label_windows_are_anchored_on_partitions_as_on_one_machine(data_dir, parts_dir,
                                                                          client, fast_params):
    """The 365-day CLV window does not fit this history: the partitions send every
    customer's summary and features (fewer than the sample's cap), so the BG/NBD anchor,
    and the CLV map equal the local engine's."""
    from training.horizon import needs_anchor
    from training.partitioned import fit_partitioned
    from training.run import fit_on_dataset

    dataset = read_source(str(data_dir)).dataset
    local, local_set = fit_on_dataset(dataset, as_of=AS_OF, params=fast_params)
    assert any(needs_anchor(local_set)), "the fixture must shorten the label windows"
    assert "horizon_clv_scale" in local.metrics, "the local engine maps CLV to the anchor"
    fit, _, _ = fit_partitioned(str(parts_dir), client=client, as_of=AS_OF, params=fast_params)
    assert fit.notes == local.notes
    assert fit.bundle.horizon_days == local.bundle.horizon_days
    assert fit.bundle.calibration == local.bundle.calibration
    assert fit.bundle.risk_cuts == pytest.approx(local.bundle.risk_cuts, rel=1e-6)
    assert fit.bundle.value_cuts == pytest.approx(local.bundle.value_cuts, rel=1e-6)
    anchored = {k: v for k, v in local.metrics.items() if k.startswith(("horizon_", "clv_recent"))}
    assert anchored, local.metrics
    for name, value in anchored.items():
        assert fit.metrics[name] == pytest.approx(value, rel=1e-6), name
    features = build_features(dataset, as_of=AS_OF)
    mine, theirs = fit.bundle.predict(features), local.bundle.predict(features)
    for column in ("churn_probability", "clv"):
        np.testing.assert_allclose(mine[column], theirs[column], rtol=1e-6, err_msg=column)


def test_the_anchor_on_partitions_fits_on_a_bounded_sample(parts_dir, fast_params):
    """Above the cap the driver holds a stable sample, says so, and the anchor's level
    stays near the one fitted on everyone."""
    from training.horizon import anchor_from_summary
    from training.partitioned_anchor import in_sample, partitioned_evidence

    manifest = read_manifest(str(parts_dir))
    whole = partitioned_evidence(str(parts_dir), client=None, manifest=manifest, as_of=AS_OF)
    sampled = partitioned_evidence(str(parts_dir), client=None, manifest=manifest, as_of=AS_OF,
                                   sample=600)
    assert whole.note is None, "under the cap every customer is in"
    share = 600 / CUSTOMERS
    assert sampled.note is not None and f"{len(sampled.summary):,}" in sampled.note
    expected = in_sample(whole.summary.index, share)
    assert list(sampled.summary.index) == list(whole.summary.index[expected]), (
        "the sample is the customers the stable hash keeps, from every partition")
    assert 0.35 * len(whole.summary) < len(sampled.summary) < 0.65 * len(whole.summary)
    assert list(in_sample(whole.summary.index, share)) == list(expected), "stable across calls"
    pd.testing.assert_frame_equal(sampled.summary, whole.summary[expected])
    assert set(sampled.features.index) == set(whole.features.index[
        in_sample(whole.features.index, share)])
    fitted = {name: anchor_from_summary(evidence.summary, as_of=AS_OF, horizon_days=90,
                                        clv_horizon_days=365)
              for name, evidence in (("whole", whole), ("sampled", sampled))}
    assert fitted["sampled"].churn_probability.mean() == pytest.approx(
        fitted["whole"].churn_probability.mean(), abs=0.05)
    assert fitted["sampled"].clv.mean() == pytest.approx(fitted["whole"].clv.mean(), rel=0.25)


def test_train_command_on_a_partitioned_dataset(parts_dir, cluster, in_tmp_cwd):
    from churnlens import build_app

    result = CliRunner().invoke(build_app(), [
        "train", "--data", str(parts_dir), "--as-of", AS_OF.date().isoformat(),
        "--churn", "inactivity", "--snapshots", "4", "--engine", "dask",
        "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 0, result.output
    assert "registered churnlens version 1" in result.output, result.output
    # the 365-day CLV window does not fit this history: mapped to it by the BG/NBD anchor
    assert "match BG/NBD + Gamma-Gamma" in result.output, result.output
    assert (in_tmp_cwd / "mlflow.db").exists()
    refused = CliRunner().invoke(build_app(), [
        "train", "--data", str(parts_dir), "--uplift"])
    assert refused.exit_code == 2 and "--uplift" in refused.output, refused.output


# -- the report's metrics -------------------------------------------------------------------


def _assert_same_metrics(local, partitioned) -> None:
    """Counts exactly; sums of money up to the order they were added in."""
    for name in ("inactivity_churn", "subscription_churn", "mrr", "repeat_purchase",
                 "order_status", "cohorts"):
        expected, got = getattr(local, name), getattr(partitioned, name)
        assert not expected.empty or name in ("subscription_churn", "mrr"), name
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12,
                                      obj=f"the report's {name}")
    assert partitioned.repeat_customer_share == local.repeat_customer_share
    assert partitioned.returning_aov_trend.direction == local.returning_aov_trend.direction
    assert partitioned.returning_aov_trend.slope_per_month == pytest.approx(
        local.returning_aov_trend.slope_per_month, rel=1e-9)


def test_report_metrics_per_partition_equal_the_local_engine(data_dir, parts_dir, client,
                                                             monkeypatch):
    """Workers return tallies (no rows); the driver adds them up and reads no table."""
    import features.partitioned
    import features.partitioned_metrics
    from features.partitioned_metrics import partitioned_retention_metrics
    from features.retention import RetentionTallies, retention_metrics

    local = retention_metrics(read_source(str(data_dir)).dataset, as_of=AS_OF)

    def forbidden(*args, **kwargs):
        raise AssertionError("the driver read a partition")

    monkeypatch.setattr(features.partitioned, "read_partition", forbidden)
    monkeypatch.setattr(features.partitioned_metrics, "read_partition", forbidden)
    original = features.partitioned_metrics.run_partitions
    returned: list[object] = []

    def spy(*args, **kwargs):
        results, failures = original(*args, **kwargs)
        returned.extend(results.values())
        return results, failures

    monkeypatch.setattr(features.partitioned_metrics, "run_partitions", spy)
    partitioned = partitioned_retention_metrics(str(parts_dir), read_manifest(str(parts_dir)),
                                                client=client, as_of=AS_OF)
    assert len(returned) == PARTITIONS
    for tallies in returned:
        assert isinstance(tallies, RetentionTallies), type(tallies)
        assert len(pickle.dumps(tallies)) < 40_000, "a worker sent back more than tallies"
    _assert_same_metrics(local, partitioned)


def test_report_metrics_with_empty_partitions_equal_the_local_engine(tmp_path, tiny_tables,
                                                                    tiny_as_of):
    from features.partitioned_metrics import partitioned_retention_metrics
    from features.retention import retention_metrics

    tiny = validate_tables(tiny_tables())
    write_partitioned(tiny, str(tmp_path / "parts"), partitions=16)
    manifest = read_manifest(str(tmp_path / "parts"))
    partitioned = partitioned_retention_metrics(str(tmp_path / "parts"), manifest, client=None,
                                                as_of=tiny_as_of, horizon_days=30)
    local = retention_metrics(tiny.dataset, as_of=tiny_as_of, horizon_days=30)
    for name in ("inactivity_churn", "repeat_purchase", "order_status", "cohorts"):
        pd.testing.assert_frame_equal(getattr(partitioned, name), getattr(local, name),
                                      check_exact=False, rtol=1e-12, obj=name)


def test_report_command_on_a_partitioned_dataset_shows_the_local_figures(data_dir, parts_dir,
                                                                         cluster, tmp_path):
    """The rendered report (every figure of it) is the local engine's."""
    from churnlens import build_app
    from serving.report import gather_partitioned_report, gather_report, render_report

    stamp = pd.Timestamp("2026-03-02 09:00")
    local = gather_report(read_source(str(data_dir)).dataset, as_of=AS_OF,
                          dataset_name="shop", generated_at=stamp)
    partitioned = gather_partitioned_report(str(parts_dir), client=None, as_of=AS_OF,
                                            dataset_name="shop", generated_at=stamp)
    assert partitioned.table_rows == local.table_rows
    html_local, html_parts = render_report(local), render_report(partitioned)
    start = html_local.index('id="business-metrics"')
    end = html_local.index('id="model-view"')
    assert html_parts[start:end] == html_local[start:end]

    out = tmp_path / "report.html"
    result = CliRunner().invoke(build_app(), [
        "report", "--data", str(parts_dir), "--out", str(out), "--as-of", "2026-03-01",
        "--no-model", "--engine", "dask", "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 0, result.output
    assert 'id="business-metrics"' in out.read_text()


def test_report_on_dask_needs_a_partitioned_dataset(data_dir, tmp_path):
    from churnlens import build_app

    result = CliRunner().invoke(build_app(), [
        "report", "--data", str(data_dir), "--out", str(tmp_path / "r.html"), "--no-model",
        "--engine", "dask"])
    assert result.exit_code == 2
    assert "churnlens partition" in result.output
