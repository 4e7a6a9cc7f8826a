"""Batch scoring of a whole customer base: chunked, resumable, atomic, local or on Dask.

The dataset is read and validated once. Customers (sorted ids, so chunk boundaries are
the same on every run) are scored in chunks by the one shared `serving.scorer.Scorer`:
features with `features.pipeline.build_features` on the chunk's customers (the training
code), scores, reasons and the recommended action. Each finished chunk is written to
``OUT.parts/`` (atomically, one file per chunk); at the end the parts are streamed into a
temporary file that is renamed over ``OUT``, so ``OUT`` is never half-written, and the
work directory is removed. ``resume=True`` keeps the finished parts of an interrupted run
with the same inputs and scores only the rest.

A customer that cannot be scored (an exception while scoring it, or no history before
``as_of``) goes to ``OUT``'s rejects file with the reason; input rows the data contract
rejects go there too, with file, row, column and value. The run always accounts for every
customer row: rows in = rows scored + rows rejected.

Memory: the dataset is read once; with the local engine its chunks are then spilled to
the work directory and the dataset released before scoring starts (on Dask the driver
keeps it for the run). Everything per chunk (features, contributions, reasons,
output rows) is bounded by the chunk size, and the final file is assembled part by part.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import pickle
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.chunks import chunk_ids, partition

if TYPE_CHECKING:
    from features.dataset import Dataset
    from serving.scorer import Explain, Scorer

#: columns of the rejects file: where the problem is, whose it is, and why
REJECT_COLUMNS = ("source", "row", "customer_id", "column", "value", "reason")
OUTPUT_SUFFIXES = (".parquet", ".csv")
MANIFEST = "manifest.json"
NOT_KNOWN_REASON = "no signup or history before as_of, so there is nothing to score"
DEFAULT_CHUNK_SIZE = 50_000
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
Progress = Callable[[int, int], None]


class BatchError(ValueError):
    """The batch run cannot start or continue; the message says what to change."""


@dataclass
class BatchSummary:
    """What a batch run did; ``rows_in == rows_scored + rows_rejected`` always holds."""

    output: Path | str  # a URL for a partitioned run's output
    rejects: Path | str
    rows_in: int
    rows_scored: int
    rows_rejected: int
    chunks: int
    chunks_resumed: int
    seconds: float
    as_of: pd.Timestamp
    model_version: str
    table_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    outreach: dict[str, int] = field(default_factory=dict)


@dataclass
class ChunkResult:
    """One chunk's batch rows and rejects (plus, for outreach, records and actions)."""

    index: int
    rows: pd.DataFrame
    rejects: pd.DataFrame
    records: list[Any] = field(default_factory=list)
    triggered: list[Any] = field(default_factory=list)


class _Collector:
    """Stands in for the outbox inside the scorer so actions can be written by the driver.

    The scorer's outreach hook hands it what it would write; the driver writes it to the
    real outbox, once, whichever engine scored the chunk.
    """

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.triggered: list[Any] = []

    def record_scores(self, records: Sequence[Any], triggered: Sequence[Any] = ()) -> None:
        self.records.extend(records)
        self.triggered.extend(triggered)


def default_workers(limit: int = 4) -> int:
    """Worker processes by default: one per core this process may use, at most ``limit``.

    Each worker holds the model and a chunk, so the cap keeps a large machine's default
    from multiplying memory; ``--workers`` sets any number.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, limit))


def output_paths(out: Path) -> tuple[Path, Path]:
    """(rejects file, work directory) that belong to output ``out``."""
    return out.with_name(f"{out.stem}.rejects.csv"), out.with_name(f"{out.name}.parts")


def _rejects_frame(rows: Sequence[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(rows).reindex(columns=list(REJECT_COLUMNS))
    return frame.astype({column: "string" for column in REJECT_COLUMNS if column != "row"}
                        ).astype({"row": "Int64"})


def _customer_rejects(ids: Sequence[str], reason: str) -> pd.DataFrame:
    return _rejects_frame([{"source": "scoring", "customer_id": c, "reason": reason} for c in ids])


def score_chunk(
    scorer: Scorer,
    dataset: Dataset,
    *,
    index: int,
    as_of: pd.Timestamp,
    explain: Explain,
    top_k: int,
    collect_outreach: bool = False,
) -> ChunkResult:
    """Score one chunk's customers (``dataset`` holds only them); the unit of work on Dask.

    A chunk that fails is split in halves until the failing customers are found; they are
    rejected with the error, the rest scored, so one bad customer never stops the run.
    """
    from serving.scorer import Scorer

    ids = [str(c) for c in dataset.customers["customer_id"]]
    collector = _Collector() if collect_outreach else None
    local = Scorer(scorer.loaded, rules=scorer.rules, outbox=collector)
    frames: list[pd.DataFrame] = []
    rejects: list[pd.DataFrame] = []

    def attempt(part: Dataset, part_ids: list[str]) -> None:
        try:
            features = local.features(part, as_of=as_of)
            frame = _batch_rows(local, features, as_of=as_of, explain=explain, top_k=top_k)
        except Exception as error:  # any failure is a reject, with its reason
            if len(part_ids) == 1:
                reason = f"scoring failed: {type(error).__name__}: {error}"
                rejects.append(_customer_rejects(part_ids, reason))
                return
            half = len(part_ids) // 2
            for piece in (part_ids[:half], part_ids[half:]):
                attempt(part.for_customers(piece), piece)
            return
        frames.append(frame)
        missing = sorted(set(part_ids) - set(frame["customer_id"]))
        if missing:
            rejects.append(_customer_rejects(missing, NOT_KNOWN_REASON))

    attempt(dataset, ids)
    rows = pd.concat(frames, ignore_index=True) if frames else None
    if rows is None:
        rows = _batch_rows(local, pd.DataFrame(), as_of=as_of, explain=explain, top_k=top_k)
    rows = rows.sort_values("customer_id", kind="stable").reset_index(drop=True)
    reject_frame = (pd.concat(rejects, ignore_index=True) if rejects else _rejects_frame([]))
    return ChunkResult(
        index=index, rows=rows,
        rejects=reject_frame.sort_values("customer_id", kind="stable").reset_index(drop=True),
        records=collector.records if collector else [],
        triggered=collector.triggered if collector else [],
    )


def _batch_rows(
    scorer: Scorer, features: pd.DataFrame, *, as_of: pd.Timestamp, explain: Explain, top_k: int
) -> pd.DataFrame:
    return scorer.batch_rows(features, as_of=as_of, explain=explain, top_k=top_k)


# -- partitioning ----------------------------------------------------------------------------


# -- work directory ------------------------------------------------------------------------


def _fingerprint(
    data_dir: Path | str, *, model_version: str, model_uri: str, as_of: pd.Timestamp,
    explain: str, top_k: int, chunk_size: int, n_customers: int, rows_read: dict[str, int],
) -> dict[str, Any]:
    """What must not change between a run and its resumption (only the table files count;
    for a database, its URL without password and the rows read from each table)."""
    from features.io import find_tables
    from features.sources import is_database_url

    files: dict[str, Any]
    if is_database_url(data_dir):
        from serving.redact import masked_url  # SQLAlchemy: only for a database

        source, files = masked_url(str(data_dir)), {"rows_read": rows_read}
    else:
        source = str(Path(data_dir).resolve())
        files = {
            p.name: [p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(find_tables(Path(data_dir)).values())
        }
    return {"data": source, "files": files, "model_uri": model_uri,
            "model_version": model_version, "as_of": as_of.isoformat(), "explain": explain,
            "top_k": top_k, "chunk_size": chunk_size, "customers": n_customers}


def _part_path(work: Path, index: int, kind: str) -> Path:
    return work / f"{kind}-{index:06d}.parquet"


def _write_atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _prepare_work_dir(work: Path, fingerprint: dict[str, Any], *, resume: bool) -> set[int]:
    """Create or reuse the work directory; the indices of chunks already finished."""
    manifest = work / MANIFEST
    if work.exists() and resume:
        if not manifest.exists():
            raise BatchError(f"{work} has no {MANIFEST}; remove it or run without --resume")
        previous = json.loads(manifest.read_text())
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise BatchError(
                f"cannot resume: {', '.join(changed)} changed since the interrupted run "
                f"(work directory {work}); run without --resume to start over"
            )
        return {
            int(p.stem.split("-")[1]) for p in work.glob("rows-*.parquet")
            if _part_path(work, int(p.stem.split("-")[1]), "rejects").exists()
        }
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    tmp = manifest.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
    os.replace(tmp, manifest)
    return set()


def save_chunk(work: Path, result: ChunkResult, columns: list[str]) -> ChunkResult:
    """Write a scored chunk's part files; what is left for the driver (rows dropped).

    Rejects are written first: a chunk counts as finished only once its rows file
    exists too.
    """
    index = result.index
    _write_atomic_parquet(_rejects_frame(result.rejects), _part_path(work, index, "rejects"))
    _write_atomic_parquet(_normalise(result.rows, columns), _part_path(work, index, "rows"))
    return replace(result, rows=pd.DataFrame(), rejects=_rejects_frame([]))


def _assemble(parts: Sequence[Path], out: Path) -> int:
    """Stream the parts into a temporary file beside ``out`` and rename it into place."""
    import pyarrow.parquet as pq

    tmp = out.with_name(f".{out.name}.tmp")
    rows = 0
    if out.suffix == ".parquet":
        schema = pq.read_schema(parts[0]) if parts else None
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                table = pq.read_table(part)
                if table.schema != schema:
                    table = table.cast(schema)
                writer.write_table(table)
                rows += table.num_rows
    else:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            for i, part in enumerate(parts):
                frame = pd.read_parquet(part)
                frame.to_csv(handle, index=False, header=i == 0)
                rows += len(frame)
    os.replace(tmp, out)
    return rows


def _normalise(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Fixed column order and dtypes, so every part has one schema whatever it contains."""
    frame = rows.reindex(columns=columns)
    for column in columns:
        if column in ("churn_probability", "clv", "value_at_risk"):
            frame[column] = frame[column].astype("float64")
        elif column == "as_of":
            frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
        else:
            frame[column] = frame[column].astype("string")
    return frame


# -- the run ----------------------------------------------------------------------------------


def run_batch(
    *,
    data: Path | str,
    out: Path,
    scorer: Scorer,
    model_uri: str,
    as_of: pd.Timestamp | None = None,
    top_k: int = 5,
    explain: Explain = "all",
    engine: str = "local",
    scheduler: str | None = None,
    resume: bool = False,
    outbox: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
    workers: int = 1,
    tables: Path | None = None,
    connect_timeout: float = 10.0,
) -> BatchSummary:
    """Score every customer of the dataset in ``data`` into ``out`` (see the module doc).

    ``data`` is a dataset directory or a database URL (``tables``: its YAML mapping).

    ``progress(done, total)`` is called with customer counts as chunks finish (also for
    chunks kept from an interrupted run). With ``outbox``, each chunk's scores and
    triggered actions are written to it (``Outbox.record_scores``), as the API does.
    ``workers`` > 1 scores chunks in that many processes side by side (local engine; at
    most one per chunk to do); 1 scores them in this process. A ``scheduler`` that does not
    answer within ``connect_timeout`` seconds raises `features.cluster.SchedulerUnreachable`.
    """
    from features.io import read_dataset
    from serving.scorer import BATCH_COLUMNS, BATCH_TAIL_COLUMNS, EXPLAIN_CHOICES

    started = time.perf_counter()
    out = Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise BatchError(f"--out {out}: the output must end in .parquet or .csv")
    if explain not in EXPLAIN_CHOICES:
        raise BatchError(f"--explain must be one of {', '.join(EXPLAIN_CHOICES)}, not {explain}")
    if chunk_size < 1:
        raise BatchError("--chunk-size must be at least 1")
    if engine not in ("local", "dask"):
        raise BatchError(f"--engine must be local or dask, not {engine}")
    if workers < 1:
        raise BatchError("--workers must be at least 1")
    out.parent.mkdir(parents=True, exist_ok=True)
    rejects_path, work = output_paths(out)

    validation = read_dataset(data, tables=tables)
    dataset = validation.dataset
    # the accounting needs the validation's counts and rejects, not its tables
    table_rows = {
        name: {"read": validation.rows_read.get(name, 0),
               "used": validation.rows_used.get(name, 0),
               "rejected": validation.rows_rejected.get(name, 0)}
        for name in validation.rows_read
    }
    input_rejects = _input_rejects(validation)
    del validation
    as_of = pd.Timestamp(as_of) if as_of is not None else dataset.default_as_of()
    chunks = chunk_ids(dataset.customers["customer_id"], chunk_size)
    n_customers = sum(len(c) for c in chunks)
    fingerprint = _fingerprint(
        data, model_version=scorer.model_version, model_uri=model_uri, as_of=as_of,
        explain=explain, top_k=top_k, chunk_size=chunk_size, n_customers=n_customers,
        rows_read={name: counts["read"] for name, counts in table_rows.items()},
    )
    finished = _prepare_work_dir(work, fingerprint, resume=resume)
    columns = [*BATCH_COLUMNS, *(f"reason_{k}" for k in range(1, top_k + 1)),
               *BATCH_TAIL_COLUMNS]

    done = sum(len(chunks[i]) for i in finished if i < len(chunks))
    if progress is not None:
        progress(done, n_customers)
    todo = [i for i in range(len(chunks)) if i not in finished]
    outreach = {"scores": 0, "actions": 0}

    def account(done_chunk: ChunkResult) -> None:
        """The driver's share of a finished chunk: the outbox and the progress bar."""
        nonlocal done
        if outbox is not None:
            written = outbox.record_scores(done_chunk.records, done_chunk.triggered)
            outreach["scores"] += int(getattr(written, "scores", len(done_chunk.records)))
            outreach["actions"] += int(getattr(written, "actions_created", 0) or 0)
        done += len(chunks[done_chunk.index])
        if progress is not None:
            progress(done, n_customers)

    def persist(result: ChunkResult) -> None:
        account(save_chunk(work, result, columns))

    kwargs = {"as_of": as_of, "explain": explain, "top_k": top_k,
              "collect_outreach": outbox is not None}
    wanted = set(todo)
    pieces = (
        (i, part) for i, part in enumerate(partition(dataset, chunks)) if i in wanted
    )
    processes = min(workers, len(todo))
    if engine == "dask":
        _run_dask(pieces, scorer, kwargs, persist, scheduler=scheduler,
                  connect_timeout=connect_timeout)
    else:
        spilled = _spill(pieces, work)
        del pieces, dataset  # the chunks are on disk now: one chunk in memory at a time
        _release_memory()
        if processes > 1:
            _run_processes(spilled, scorer, kwargs, account, work=work, columns=columns,
                           processes=processes)
        else:
            for i, chunk in spilled:
                account(score_spilled(scorer, chunk, i, kwargs, work, columns))

    rows_scored = _assemble([_part_path(work, i, "rows") for i in range(len(chunks))], out) \
        if chunks else _write_empty(out, columns)
    scoring_rejects = [pd.read_parquet(_part_path(work, i, "rejects")) for i in range(len(chunks))]
    all_rejects = pd.concat([input_rejects, *scoring_rejects], ignore_index=True)
    _write_rejects(_rejects_frame(all_rejects), rejects_path)

    rejected_customer_rows = table_rows.get("customers", {}).get("rejected", 0)
    scoring_rejected = sum(len(frame) for frame in scoring_rejects)
    shutil.rmtree(work)
    return BatchSummary(
        output=out, rejects=rejects_path,
        rows_in=table_rows.get("customers", {}).get("read", 0),
        rows_scored=rows_scored, rows_rejected=rejected_customer_rows + scoring_rejected,
        chunks=len(chunks), chunks_resumed=len(finished & set(range(len(chunks)))),
        seconds=time.perf_counter() - started, as_of=as_of,
        model_version=scorer.model_version, table_rows=table_rows,
        outreach=outreach if outbox is not None else {},
    )


def _input_rejects(validation: Any) -> pd.DataFrame:
    """The data contract's rejected rows, in the rejects file's columns."""
    return contract_rejects(validation.rejects)


def contract_rejects(frame: pd.DataFrame | None) -> pd.DataFrame:
    """Rejects of the data contract (file, row, column, value, reason) as rejects-file rows."""
    if frame is None or frame.empty:
        return _rejects_frame([])
    converted = pd.DataFrame({
        "source": frame["file"].astype(str),
        "row": pd.to_numeric(frame["row"], errors="coerce"),
        "customer_id": None,
        "column": frame["column"].astype(str),
        "value": frame["value"].astype(str),
        "reason": frame["reason"].astype(str),
    })
    return _rejects_frame(converted)


def _write_rejects(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _write_empty(out: Path, columns: list[str]) -> int:
    empty = _normalise(pd.DataFrame(columns=columns), columns)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".parquet":
        empty.to_parquet(tmp, index=False)
    else:
        empty.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return 0


def _run_dask(
    pieces: Iterator[tuple[int, Dataset]],
    scorer: Scorer,
    kwargs: dict[str, Any],
    persist: Callable[[ChunkResult], None],
    *,
    scheduler: str | None,
    connect_timeout: float,
) -> None:
    """The same `score_chunk` on a Dask cluster; parts are written here, by the driver.

    At most two chunks per worker are in flight, so the driver's memory stays bounded by
    the chunk size; results are persisted as they complete (the part files, not the order
    of completion, decide the output order).
    """
    from distributed import as_completed

    from features.cluster import dask_client, share

    with dask_client(scheduler, workers=default_workers(),
                     connect_timeout=connect_timeout) as client:
        # a task, not scattered data: recomputed if every worker holding it dies
        shared = share(client, scorer, name="model")
        limit = max(2, 2 * len(client.scheduler_info()["workers"]))
        running = as_completed()
        for i, part in pieces:
            # pure=False: hashing a chunk's frames to name the task would cost more than it saves
            running.add(client.submit(score_chunk, shared, part, index=i, pure=False, **kwargs))
            while running.count() >= limit:
                persist(next(running).result())
        for future in running:
            persist(future.result())


_WORKER_SCORER: Scorer | None = None
#: how often a worker checks that the driver that started it is still its parent
PARENT_CHECK_SECONDS = 0.25


def _start_worker(scorer_pickle: bytes, parent_pid: int) -> None:
    """Worker process set-up: die with the driver; one OpenMP thread (the processes share
    the cores); the model."""
    global _WORKER_SCORER
    _exit_with_parent(parent_pid)
    os.environ["OMP_NUM_THREADS"] = "1"   # before LightGBM loads, i.e. before unpickling
    # LightGBM imports scikit-learn (and with it SciPy) only for its sklearn-style
    # estimators, which scoring never uses: about 1 s of CPU and 70 MB per worker before
    # its first chunk. Marked absent, LightGBM loads without it (its own fallback).
    sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]
    _WORKER_SCORER = pickle.loads(scorer_pickle)


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the driver is gone, whatever killed it.

    A driver killed by SIGKILL cannot tell its workers; orphans would go on scoring
    queued chunks and then idle holding the model. Linux delivers SIGKILL to the worker
    when its parent dies; everywhere, a daemon thread also watches for re-parenting. A
    worker ended mid-chunk leaves at most a temporary file: parts are renamed into place
    whole, so ``--resume`` sees a chunk finished or not at all.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog below still works
            pass
    if os.getppid() != parent_pid:  # the driver died before the line above ran
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="churnlens-parent-watch", daemon=True).start()


def score_spilled(scorer: Scorer, chunk: Path, index: int, kwargs: dict[str, Any],
                  work: Path, columns: list[str]) -> ChunkResult:
    """Score a chunk spilled by `_spill`, write its parts, delete the chunk file."""
    with open(chunk, "rb") as handle:
        part = pickle.load(handle)  # written by this run's _spill, in its own work directory
    result = save_chunk(work, score_chunk(scorer, part, index=index, **kwargs), columns)
    chunk.unlink()
    return result


def _score_in_worker(chunk: Path, index: int, kwargs: dict[str, Any], work: Path,
                     columns: list[str]) -> ChunkResult:
    assert _WORKER_SCORER is not None, "worker not started with _start_worker"
    return score_spilled(_WORKER_SCORER, chunk, index, kwargs, work, columns)


def _spill(pieces: Iterator[tuple[int, Dataset]], work: Path) -> list[tuple[int, Path]]:
    """Write each chunk's tables to the work directory, so the dataset can leave memory.

    Scoring then holds only the chunks in work (one per worker): the run's peak memory is
    the read, not the dataset plus the chunks. Pickle keeps the frames exactly (dtypes
    included).
    """
    spilled = []
    for i, part in pieces:
        path = work / f"chunk-{i:06d}.pickle"
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as handle:
            pickle.dump(part, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)  # a worker never opens a half-written chunk
        spilled.append((i, path))
    return spilled


def _release_memory() -> None:
    """Hand freed memory back to the system (Arrow's allocator keeps it otherwise)."""
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()


def _run_processes(
    chunks: Sequence[tuple[int, Path]],
    scorer: Scorer,
    kwargs: dict[str, Any],
    account: Callable[[ChunkResult], None],
    *,
    work: Path,
    columns: list[str],
    processes: int,
) -> None:
    """`score_chunk` on spilled chunks in worker processes; each worker writes its parts.

    Spawned (not forked) workers: LightGBM's OpenMP runtime is not safe across fork.
    At most two chunks per worker are queued; the part files, not the order of
    completion, decide the output order.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(
        max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker, initargs=(pickle.dumps(scorer), os.getpid()),
    )
    try:
        running: set[Any] = set()
        for i, chunk in chunks:
            running.add(pool.submit(_score_in_worker, chunk, i, kwargs, work, columns))
            while len(running) >= 2 * processes:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    account(future.result())
        for future in running:
            account(future.result())
    except BrokenProcessPool as error:
        raise BatchError(
            f"a worker process stopped ({error}); the machine may be out of memory: try a "
            f"smaller --chunk-size or fewer --workers, and --resume to keep the finished chunks"
        ) from None
    finally:
        # on an interruption, chunks not started yet are dropped (resume scores them)
        pool.shutdown(wait=True, cancel_futures=True)


def fingerprint_digest(summary: BatchSummary) -> str:
    """A short digest of the output file (for logs: same input and model, same digest)."""
    digest = hashlib.sha256()
    with open(summary.output, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
