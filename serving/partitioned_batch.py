"""Batch scoring of a partitioned dataset: workers read, score and write; the driver merges.

The dataset is one written by `churnlens partition` (`features.partitioned`). Each
partition is one task: the worker reads and validates it, scores it chunk by chunk with
the same `serving.batch.score_chunk` as the local engine, and writes its rows and
rejects to the work directory ``OUT.parts/``. The driver holds the manifest, the model
(sent to each worker once, `features.cluster.share`) and per-partition counts. At the
end one more task, on a worker, merges the parts, each sorted by customer id, into
``OUT`` in one streaming pass (`features.sorted_merge`), so the file is the local
engine's, row for row, and the driver holds no rows at all: its memory does not grow
with the customer base.

A lost worker's partitions are re-run by Dask (a part is written whole under a fixed
name, so a re-run leaves the same file). ``resume=True`` keeps the finished partitions
of an interrupted run with the same inputs; a partition that is missing or unreadable
then does not stop the others, and is reported once they finish.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.cluster import (
    PartitionFailure,
    release_memory,
    run_one,
    run_partitions,
    share,
)
from features.partitioned import REJECTS_NAME, Manifest, read_manifest, read_partition
from features.sorted_merge import (
    PartWriter,
    merged_batches,
    part_row_group,
    write_merged,
    write_part,
)
from serving.batch import (
    MANIFEST,
    BatchError,
    BatchSummary,
    Progress,
    _input_rejects,
    _normalise,
    _rejects_frame,
    chunk_ids,
    contract_rejects,
    partition,
    score_chunk,
)
from serving.outreach.outbox import Outbox

if TYPE_CHECKING:
    from distributed import Client

    from serving.scorer import Explain, Scorer


#: customers scored at a time inside a partition (at most ``--chunk-size``): a worker
#: holds one such chunk's features, explanations and rows besides the partition's tables,
#: and chunks of this size score as fast as whole partitions of 25,000 (bench figures in
#: docs/scale.md)
PARTITION_CHUNK = 5_000


@dataclass(frozen=True)
class ScoredPartition:
    """A worker's report on its partition: counts and where its parts are, no rows."""

    partition: int
    customers: int
    rows_scored: int
    rows_rejected: int
    input_rows_rejected: dict[str, int]
    outreach: dict[str, int] | None = None


def _fs(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(str(url))


def part_path(work: str, number: int, kind: str) -> str:
    return posixpath.join(work, f"{kind}-{number:05d}.parquet")


def score_partition(number: int, *, scorer: Scorer, data: str, manifest: Manifest,
                    as_of: pd.Timestamp, explain: Explain, top_k: int, chunk_size: int,
                    work: str, columns: list[str], row_group: int,
                    outbox_url: str | None = None) -> ScoredPartition:
    """On a worker: read, validate and score partition ``number``; write its parts.

    The partition is scored in chunks of at most `PARTITION_CHUNK` customers (sorted
    ids), each chunk's rows streamed to the part file as it is scored, so what the worker
    holds beyond the partition's tables is one chunk's features and rows. With
    ``outbox_url`` the worker also writes each chunk's scores and triggered actions to
    the outbox, in one transaction per chunk (idempotent: a partition run again after a
    lost worker replaces its scores and skips actions already there). Rejects are
    written before the rows file appears: a partition counts as finished once its rows
    exist.
    """
    validation = read_partition(data, number, manifest)
    input_rejects = _input_rejects(validation)
    dataset = validation.dataset
    del validation
    chunks = chunk_ids(dataset.customers["customer_id"], min(chunk_size, PARTITION_CHUNK))
    rejects: list[pd.DataFrame] = []
    outbox = Outbox(outbox_url) if outbox_url is not None else None
    outreach = {"scores": 0, "actions": 0}
    rows = PartWriter(part_path(work, number, "rows"), row_group=row_group)
    try:
        for i, part in enumerate(partition(dataset, chunks)):
            result = score_chunk(scorer, part, index=i, as_of=as_of, explain=explain,
                                 top_k=top_k, collect_outreach=outbox is not None)
            if outbox is not None:
                written = outbox.record_scores(result.records, result.triggered)
                outreach["scores"] += written.scores
                outreach["actions"] += written.actions_created
            rows.write(_normalise(result.rows, columns))
            rejects.append(result.rejects)
            del part, result
        del dataset
        if not rows.rows:
            rows.write(_normalise(pd.DataFrame(columns=columns), columns))
        rejected = _rejects_frame(pd.concat(rejects, ignore_index=True) if rejects else [])
        write_part(_rejects_frame(input_rejects), part_path(work, number, "input-rejects"),
                   row_group=row_group)
        write_part(rejected, part_path(work, number, "rejects"), row_group=row_group)
    except BaseException:
        rows.close(keep=False)
        raise
    finally:
        if outbox is not None:
            outbox.close()
    rows.close()
    release_memory()
    return ScoredPartition(
        partition=number, customers=sum(len(c) for c in chunks), rows_scored=rows.rows,
        rows_rejected=len(rejected),
        input_rows_rejected={str(k): int(v) for k, v in
                             input_rejects.groupby("source").size().items()},
        outreach=outreach if outbox is not None else None)


def worker_outbox_url(url: str) -> str:
    """The outbox URL as workers must use it: a relative SQLite path made absolute (workers
    may run elsewhere; it then needs a shared file system), an in-memory one refused."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    if parsed.database in (None, "", ":memory:"):
        raise BatchError(f"--outbox-url {url}: an in-memory SQLite outbox is private to one "
                         "process; workers need a database file or server they can all reach")
    return parsed.set(database=str(Path(parsed.database).resolve())).render_as_string(
        hide_password=False)


def _fingerprint(data: str, manifest: Manifest, *, model_uri: str, model_version: str,
                 as_of: pd.Timestamp, explain: str, top_k: int, chunk_size: int,
                 outbox: str | None) -> dict[str, Any]:
    """What must not change between a run and its resumption (the finished partitions'
    scores went to ``outbox``, or to none)."""
    from serving.redact import masked_url

    return {"data": data, "manifest": hashlib.sha256(manifest.to_json().encode()).hexdigest(),
            "model_uri": model_uri, "model_version": model_version,
            "as_of": as_of.isoformat(), "explain": explain, "top_k": top_k,
            "chunk_size": chunk_size, "outbox": masked_url(outbox) if outbox else None}


def _prepare_work(work: str, fingerprint: dict[str, Any], *, resume: bool,
                  partitions: int) -> set[int]:
    """Create or reuse the work directory; the partitions already finished."""
    fs, path = _fs(work)
    manifest = posixpath.join(path, MANIFEST)
    if resume and fs.exists(path):
        if not fs.exists(manifest):
            raise BatchError(f"{work} has no {MANIFEST}; remove it or run without --resume")
        with fs.open(manifest, "r") as handle:
            previous = json.loads(handle.read())
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise BatchError(
                f"cannot resume: {', '.join(changed)} changed since the interrupted run "
                f"(work directory {work}); run without --resume to start over")
        return {k for k in range(partitions)
                if all(fs.exists(_fs(part_path(work, k, kind))[1])
                       for kind in ("input-rejects", "rejects", "rows"))}
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    with fs.open(manifest, "w") as handle:
        handle.write(json.dumps(fingerprint, indent=1, sort_keys=True))
    return set()


def output_locations(out: str) -> tuple[str, str]:
    """(rejects file, work directory) of output ``out``, as for the local engine."""
    directory, name = posixpath.split(str(out))
    stem = name.rsplit(".", 1)[0]
    return posixpath.join(directory, f"{stem}.rejects.csv"), posixpath.join(
        directory, f"{name}.parts")


def run_partitioned_batch(
    *, data: str, out: str, scorer: Scorer, model_uri: str, client: Client | None,
    as_of: pd.Timestamp | None = None, top_k: int = 5, explain: Explain = "all",
    resume: bool = False, chunk_size: int = 50_000, progress: Progress | None = None,
    partitions: int | None = None, outbox_url: str | None = None,
) -> BatchSummary:
    """Score every customer of a partitioned dataset into ``out`` (see the module doc).

    ``client`` is a Dask client (one task per partition on its workers) or None (the
    same tasks in this process). ``progress(done, total)`` counts customers. With
    ``outbox_url`` (`score --outreach`) each task writes its scores and actions to that
    outbox, so the workers must reach it; the summary counts what they wrote.
    """
    from serving.scorer import BATCH_COLUMNS, BATCH_TAIL_COLUMNS

    started = time.perf_counter()
    out = str(out)
    if not out.endswith((".parquet", ".csv")):
        raise BatchError(f"--out {out}: the output must end in .parquet or .csv")
    worker_outbox = worker_outbox_url(outbox_url) if outbox_url is not None else None
    manifest = read_manifest(data, partitions=partitions)
    as_of = pd.Timestamp(as_of) if as_of is not None else manifest.default_as_of()
    rejects_path, work = output_locations(out)
    fingerprint = _fingerprint(data, manifest, model_uri=model_uri,
                               model_version=scorer.model_version, as_of=as_of,
                               explain=explain, top_k=top_k, chunk_size=chunk_size,
                               outbox=worker_outbox)
    finished = _prepare_work(work, fingerprint, resume=resume, partitions=manifest.partitions)
    columns = [*BATCH_COLUMNS, *(f"reason_{k}" for k in range(1, top_k + 1)),
               *BATCH_TAIL_COLUMNS]
    total = manifest.customers
    todo = [k for k in range(manifest.partitions) if k not in finished]
    done = sum(manifest.rows[k].get("customers", 0) for k in finished)
    if progress is not None:
        progress(done, total)

    shared = share(client, scorer, name="model") if todo else scorer
    results, failures = run_partitions(
        score_partition, todo, client=client, name="score", keep_going=resume,
        progress=(lambda finished_customers, _: progress(done + finished_customers, total))
        if progress is not None else None,
        weights=[manifest.rows[k].get("customers", 0) for k in todo],
        scorer=shared, data=data, manifest=manifest, as_of=as_of, explain=explain,
        top_k=top_k, chunk_size=chunk_size, work=work, columns=columns,
        row_group=part_row_group(manifest.partitions),
        outbox_url=worker_outbox)
    if failures:
        raise BatchError(_failure_message(failures, finished=len(finished) + len(results),
                                          partitions=manifest.partitions))
    del shared
    rows_scored, scoring_rejected = run_one(
        write_outputs, client=client, name="score-merge", data=data, work=work, out=out,
        rejects=rejects_path, partitions=manifest.partitions)
    fs, work_path = _fs(work)
    fs.rm(work_path, recursive=True)
    customers_read = manifest.rows_read.get("customers", manifest.customers)
    input_rejected = manifest.rows_rejected.get("customers", 0)
    return BatchSummary(
        output=out, rejects=rejects_path, rows_in=customers_read, rows_scored=rows_scored,
        rows_rejected=input_rejected + scoring_rejected, chunks=manifest.partitions,
        chunks_resumed=len(finished), seconds=time.perf_counter() - started, as_of=as_of,
        model_version=scorer.model_version,
        table_rows={name: {"read": manifest.rows_read.get(name, 0),
                           "used": sum(part.get(name, 0) for part in manifest.rows),
                           "rejected": manifest.rows_rejected.get(name, 0)}
                    for name in manifest.tables},
        outreach={key: sum((r.outreach or {}).get(key, 0) for r in results.values())
                  for key in ("scores", "actions")} if outbox_url is not None else {},
    )


def _failure_message(failures: list[PartitionFailure], *, finished: int, partitions: int) -> str:
    named = "; ".join(f.reason for f in failures)
    return (f"{len(failures)} of {partitions} partitions could not be scored ({named}); "
            f"{finished} finished and are kept: fix the partition and run again with --resume")


def write_outputs(*, data: str, work: str, out: str, rejects: str,
                  partitions: int) -> tuple[int, int]:
    """On a worker: merge the parts into ``out`` and the rejects file; (rows scored,
    customers that could not be scored)."""
    numbers = range(partitions)
    rows = write_merged([part_path(work, k, "rows") for k in numbers], out, key="customer_id")
    release_memory()
    scoring_rejected = _write_rejects(data, work, rejects, partitions)
    release_memory()
    return rows, scoring_rejected


def _write_rejects(data: str, work: str, path: str, partitions: int) -> int:
    """The rejects file: the contract's (when partitioning, then on the workers), then the
    customers that could not be scored in id order, as the local engine writes them.
    Returns how many customers could not be scored."""
    fs, local = _fs(path)
    source_fs, root = _fs(data)
    temp = f"{local}.tmp"
    scoring = 0
    with fs.open(temp, "w", encoding="utf-8", newline="") as handle:
        _rejects_frame([]).to_csv(handle, index=False)
        partitioned = posixpath.join(root, REJECTS_NAME)
        if source_fs.exists(partitioned):
            with source_fs.open(partitioned, "r", encoding="utf-8") as source:
                for frame in pd.read_csv(source, dtype=str, keep_default_na=False,
                                         na_values=[], chunksize=50_000):
                    rows = _rejects_frame(contract_rejects(frame))
                    rows.to_csv(handle, index=False, header=False)
        for k in range(partitions):
            frame = pd.read_parquet(part_path(work, k, "input-rejects"))
            _rejects_frame(frame).to_csv(handle, index=False, header=False)
        for table in merged_batches([part_path(work, k, "rejects") for k in range(partitions)],
                                    key="customer_id"):
            _rejects_frame(table.to_pandas()).to_csv(handle, index=False, header=False)
            scoring += table.num_rows
    fs.mv(temp, local)
    return scoring
