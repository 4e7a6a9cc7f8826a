"""Reading events from PostgreSQL: the columnar clients against ``pandas.read_sql`` and Parquet.

Writes (once, cached in --cache) --events synthetic events of --customers customers
as Parquet, loads them into a PostgreSQL schema of its own with ``churnlens load``'s
code (COPY; the load time is reported too), then reads the events table into a
pandas frame, each way in a fresh process (peak memory is its own), --repeats
times, and reports the median:

- ``read_sql``: ``pandas.read_sql`` over SQLAlchemy + psycopg (the reference);
- ``adbc``: the ADBC PostgreSQL driver (binary COPY decoded into Arrow) with
  churnlens's batch size (`features.db_source.read_arrow`, what churnlens uses);
- ``adbc_default``: the same driver with its default 16 MB batches;
- ``adbc_x2``: two ADBC connections in two threads, each reading half of the
  table's pages (TID range scans), the Arrow tables concatenated;
- ``copy_csv``: psycopg ``COPY (SELECT …) TO STDOUT (FORMAT csv)`` parsed by pyarrow;
- ``connectorx`` / ``connectorx_x2``: connectorx's Arrow path, on one connection
  or on two (the same page halves), when it is installed;
- ``parquet``: the same rows from the Parquet file (``pd.read_parquet``).

and, as ceilings (no frame is built; what any client must wait for):

- ``server_copy``: the server encodes the rows as binary COPY into /dev/null
  (its own work, on one core);
- ``wire_binary`` / ``wire_binary_x2``: binary COPY to this process over one or two
  connections, the bytes dropped (server plus socket, the least a client does).

Every way runs the query `features.db_source` issues for the events table and
must return the same row count. The last column of the table is the median
time of ``read_sql`` divided by the way's (target: >= 5x); client CPU is this
process's alone (the server's work is in the wall time).

    nice -n 10 .venv/bin/python bench/db_read_bench.py --events 10000000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

DEFAULT_URL = os.environ.get("CHURNLENS_TEST_POSTGRES_URL",
                             "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WAYS = ("read_sql", "adbc", "adbc_default", "adbc_x2", "copy_csv", "connectorx", "connectorx_x2",
        "parquet")
#: not reads into a frame: what the server and the wire cost alone (the ceiling of any client)
CEILINGS = ("server_copy", "wire_binary", "wire_binary_x2")
QUERY = 'SELECT "customer_id", "occurred_at", "event_type", "value" FROM "events"'
EVENT_TYPES = ("session", "product_view", "cart_add", "support_ticket", "email_open",
               "login")


def schema_url(url: str, schema: str) -> str:
    from urllib.parse import quote

    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


def write_files(directory: Path, *, events: int, customers: int) -> None:
    """Synthetic events (customer, time over three years, type, value on 30%) as Parquet."""
    import numpy as np
    import pandas as pd

    marker = directory / "bench.json"
    if marker.exists() and json.loads(marker.read_text()) == {"events": events,
                                                               "customers": customers}:
        return
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    ids = np.array([f"C{i:07d}" for i in range(customers)], dtype=object)
    pd.DataFrame({"customer_id": ids, "signup_at": pd.Timestamp("2023-01-01")}).to_parquet(
        directory / "customers.parquet", index=False)
    start = np.datetime64("2023-01-01T00:00:00", "s").astype(np.int64)
    seconds = rng.integers(0, 3 * 365 * 86400, size=events) + start
    values = np.where(rng.random(events) < 0.3, rng.gamma(2.0, 10.0, size=events).round(2),
                      np.nan)
    frame = pd.DataFrame({
        "customer_id": pd.array(ids[rng.integers(0, customers, size=events)], dtype="str"),
        "occurred_at": pd.to_datetime(np.sort(seconds), unit="s"),
        "event_type": pd.array(np.array(EVENT_TYPES, dtype=object)[
            rng.integers(0, len(EVENT_TYPES), size=events)], dtype="str"),
        "value": values,
    })
    frame.to_parquet(directory / "events.parquet", index=False, row_group_size=1_000_000)
    marker.write_text(json.dumps({"events": events, "customers": customers}))


def load(directory: Path, url: str) -> dict:
    """The files into the schema with `features.db_load` (validation timed apart)."""
    from features.db_load import load_dataset
    from features.io import read_dataset

    started = time.perf_counter()
    validation = read_dataset(directory)
    validated = time.perf_counter()
    report = load_dataset(validation, url, now=datetime(2026, 1, 1), replace=True)
    loaded = time.perf_counter()
    return {"validate_seconds": round(validated - started, 1),
            "load_seconds": round(loaded - validated, 1),
            "rows_added": sum(report.added.values())}


def tid_queries(libpq: str, query: str, parts: int) -> list[str]:
    """``query`` split into ``parts`` reads of the events table by page range (TID range scans:
    each backend reads its own pages, no row is read twice)."""
    import psycopg

    with psycopg.connect(libpq) as connection:
        pages = connection.execute("SELECT pg_relation_size('events') / "
                                   "current_setting('block_size')::int").fetchone()[0]
    bounds = [round(pages * i / parts) for i in range(parts + 1)]
    bounds[-1] = pages + 1  # pages added since
    queries = []
    for low, high in itertools.pairwise(bounds):
        queries.append(f"{query} WHERE ctid >= '({low},0)'::tid AND ctid < '({high},0)'::tid")
    return queries


def _parallel(read, queries: list[str]):
    """Run ``read(query)`` for each query in its own thread; the Arrow tables concatenated."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    with ThreadPoolExecutor(len(queries)) as pool:
        return pa.concat_tables(list(pool.map(read, queries)))


def read_once(way: str, url: str, directory: Path) -> dict:
    """One read of the events table the given way; wall time, rows, peak RSS."""
    import pandas as pd
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    if way.startswith("adbc"):
        import adbc_driver_postgresql.dbapi as adbc
        from adbc_driver_postgresql import StatementOptions

        def adbc_read(query: str, hint: int | None = None):
            with adbc.connect(libpq) as connection, connection.cursor() as cursor:
                if hint is not None:
                    cursor.adbc_statement.set_options(
                        **{StatementOptions.BATCH_SIZE_HINT_BYTES.value: str(hint)})
                cursor.execute(query)
                return cursor.fetch_arrow_table()
    if way == "adbc":
        from features.database import database_engine
        from features.db_source import read_arrow
    if way.startswith("adbc"):
        from functools import partial

        from features.db_source import ADBC_BATCH_BYTES
    queries = tid_queries(libpq, QUERY, 2) if way.endswith("_x2") else [QUERY]
    started, cpu = time.perf_counter(), time.process_time()
    rows: int | None = None
    frame = None
    if way == "read_sql":
        engine = create_engine(url)
        with engine.connect() as connection:
            frame = pd.read_sql(text(QUERY), connection)
    elif way == "adbc":
        frame = read_arrow(database_engine(url), QUERY).to_pandas()
    elif way == "adbc_default":
        frame = adbc_read(QUERY).to_pandas()
    elif way == "adbc_x2":
        frame = _parallel(partial(adbc_read, hint=ADBC_BATCH_BYTES), queries).to_pandas()
    elif way == "copy_csv":
        import io

        import psycopg
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        buffer = io.BytesIO()
        with psycopg.connect(libpq) as connection, connection.cursor() as cursor, \
                cursor.copy(f"COPY ({QUERY}) TO STDOUT (FORMAT csv)") as copy:
            for block in copy:
                buffer.write(block)
        buffer.seek(0)
        types = {"customer_id": pa.string(), "occurred_at": pa.timestamp("us"),
                 "event_type": pa.string(), "value": pa.float64()}
        frame = pa_csv.read_csv(buffer, read_options=pa_csv.ReadOptions(
            column_names=list(types)), convert_options=pa_csv.ConvertOptions(
            column_types=types, strings_can_be_null=False)).to_pandas()
    elif way.startswith("connectorx"):
        import connectorx

        frame = connectorx.read_sql(libpq, queries if len(queries) > 1 else queries[0],
                                    return_type="arrow").to_pandas()
    elif way == "parquet":
        frame = pd.read_parquet(directory / "events.parquet")
    elif way == "server_copy":  # the server alone: rows encoded, written nowhere
        import psycopg

        with psycopg.connect(libpq) as connection:
            connection.execute(f"COPY ({QUERY}) TO '/dev/null' (FORMAT binary)")
    else:  # wire_binary[_x2]: the server and the wire, the client keeps nothing
        import psycopg

        def drain(query: str) -> int:
            received = 0
            with psycopg.connect(libpq) as connection, connection.cursor() as cursor, \
                    cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT binary)") as copy:
                for block in copy:
                    received += len(block)
            return received

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(queries)) as pool:
            sum(pool.map(drain, queries))
    seconds = time.perf_counter() - started
    if frame is not None:
        rows = len(frame)
    return {"seconds": round(seconds, 2), "client_cpu": round(time.process_time() - cpu, 2),
            "rows": rows,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def available(way: str) -> bool:
    if not way.startswith("connectorx"):
        return True
    try:
        import connectorx  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--schema", default="churnlens_db_read_bench")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/churnlens-db-read-bench"))
    parser.add_argument("--ways", nargs="*", default=list(WAYS + CEILINGS), choices=WAYS + CEILINGS)
    parser.add_argument("--skip-load", action="store_true",
                        help="Reuse the schema a previous run loaded")
    parser.add_argument("--child", nargs=3, metavar=("WAY", "URL", "DIR"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--load-child", nargs=2, metavar=("URL", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_child:
        print(json.dumps(load(Path(args.load_child[1]), args.load_child[0])))
        return
    if args.child:
        way, url, directory = args.child
        print(json.dumps(read_once(way, url, Path(directory))))
        return

    from sqlalchemy import create_engine, text

    directory = args.cache / f"{args.events}"
    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                    "import db_read_bench as b; from pathlib import Path; "
                    "b.write_files(Path(sys.argv[2]), events=int(sys.argv[3]), "
                    "customers=int(sys.argv[4]))", str(Path(__file__).parent), str(directory),
                    str(args.events), str(args.customers)], check=True)
    url = schema_url(args.url, args.schema)
    info = {"events": args.events, "customers": args.customers}
    if not args.skip_load:
        engine = create_engine(args.url)
        with engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{args.schema}"'))
        engine.dispose()
        # in a child: Linux keeps a parent's peak RSS in its children's ru_maxrss
        output = subprocess.run([sys.executable, __file__, "--load-child", url, str(directory)],
                                check=True, capture_output=True, text=True).stdout
        info.update(json.loads(output.strip().splitlines()[-1]))
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("ANALYZE events"))
        engine.dispose()
    print(json.dumps(info), flush=True)
    results: dict[str, list[dict]] = {}
    for _ in range(args.repeats):  # interleaved, so a busy spell hits every way alike
        for way in args.ways:
            if not available(way):
                continue
            output = subprocess.run([sys.executable, __file__, "--child", way, url,
                                     str(directory)], check=True, capture_output=True,
                                    text=True).stdout
            results.setdefault(way, []).append(json.loads(output.strip().splitlines()[-1]))
            print(way, results[way][-1], flush=True)
    rows = {way: {r["rows"] for r in runs} for way, runs in results.items()
            if way not in CEILINGS}
    assert all(found == {args.events} for found in rows.values()), f"row counts differ: {rows}"
    medians = {way: statistics.median(r["seconds"] for r in runs)
               for way, runs in results.items()}
    reference = medians.get("read_sql")
    print(f"\n{args.events:,} events, median of {args.repeats} runs\n")
    print("| way | seconds (median) | rows/s | client CPU s | peak RSS MB | read_sql / way |")
    print("|---|---:|---:|---:|---:|---:|")
    for way, seconds in medians.items():
        peak = max(r["peak_rss_mb"] for r in results[way])
        ratio = f"{reference / seconds:.1f}x" if reference else "n/a"
        cpu = statistics.median(r["client_cpu"] for r in results[way])
        print(f"| {way} | {seconds:.2f} | {args.events / seconds:,.0f} | {cpu:.1f} | {peak:,} "
              f"| {ratio} |")
    if "adbc" in medians and "parquet" in medians:
        print(f"\nadbc / parquet time: {medians['adbc'] / medians['parquet']:.1f}x")


if __name__ == "__main__":
    main()
