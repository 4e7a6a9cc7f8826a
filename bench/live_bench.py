"""Live-data benchmark: ingestion throughput and freshness (ingest → outbox action).

Run from the repository root (PostgreSQL optional: without ``--postgres`` only SQLite):

    nice -n 10 .venv/bin/python bench/live_bench.py --customers 2000 \\
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test --workdir /tmp/cl-live

Steps, in one run so both databases meet the same machine state:

1. unless the work directory holds them, generate ``--customers`` customers and
   train (`churnlens generate`, `churnlens train`);
2. per database (``--databases``: a SQLite file; PostgreSQL in a schema of its own,
   dropped after): `churnlens load` the files, `churnlens serve` from the database
   (outreach on, a rule that fires for every scored customer; a first load's changes
   are marked rescored by `churnlens load` itself), wait for the day's
   matrix, then
   - **freshness**: for ``--probes`` customers one at a time, one event is
     ingested and the time from the 2xx to the customer's score in the outbox
     is measured (the outbox polled every 5 ms); median and p99;
   - **ingestion**: ``--clients`` concurrent clients post batches of 100 new
     events (``POST /v1/events``) for ``--duration`` seconds; accepted events/s.
     Side by side, the **reference**: the same batches written straight into the
     events table (SQLAlchemy ``executemany``, no HTTP, no validation, no
     change stamps), so the ratio is what the API's checks and bookkeeping cost;
   - **scores by id** with top-5 reasons: one client at a time (the service time
     and the rate one connection gets), then open loop at ``--rate``/s: quiet, then
     while ``--events-rate`` events/s are ingested by a separate process, as a
     CRM's writes would come (the target on PostgreSQL:
     p99 ≤ 25 ms at 100 req/s under 500 events/s, on a quiet machine). With
     ``--by-id-outreach off`` (the default) against a second server with outreach
     off, so the figure is the scoring path's and not the outbox's (with it on,
     the every-score rule makes each request write the outbox).

Prints a Markdown table and writes ``WORKDIR/live_bench.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_bench import free_port, prepare, steady, stop, wait_until

VENV_BIN = Path(sys.executable).parent
API_KEY = "clk_live_bench_0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
BATCH = 100
#: settings given to the servers (--switch-interval-ms, --ingest-processes), else their defaults
SERVER_ENV: dict[str, str] = {}

RULES = """version: 1
rules:
  - name: every-score
    description: fires for every scored customer, to time ingest → outbox
    min_churn_probability: 0.0
    action: experience_follow_up
    channel: file:outreach/bench.jsonl
    cooldown_days: 30
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def event_batch(customers: list[str], rng: random.Random) -> list[dict]:
    moment = now_utc()
    return [{"customer_id": rng.choice(customers),
             "occurred_at": (moment - timedelta(seconds=rng.uniform(60, 86_400))).isoformat(),
             "event_type": rng.choice(["session", "page_view", "cart_add"]),
             "event_id": uuid.uuid4().hex} for _ in range(BATCH)]


def ingest_rate(base: str, customers: list[str], *, clients: int, duration: float) -> dict:
    """Closed loop: ``clients`` threads posting batches of 100 events; accepted events/s."""
    accepted = [0] * clients
    errors = [0] * clients
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration

    def client(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(base_url=base, headers=AUTH, timeout=60) as http:
            while time.perf_counter() < stop_at:
                body = event_batch(customers, rng)
                started = time.perf_counter()
                answer = http.post("/v1/events", json=body)
                latencies.append(time.perf_counter() - started)
                if answer.status_code == 200:
                    accepted[i] += answer.json()["inserted"]
                else:
                    errors[i] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"events_per_s": sum(accepted) / elapsed, "requests": len(latencies),
            "errors": sum(errors), "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * percentile(latencies, 0.99)}


def reference_rate(url: str, customers: list[str], *, duration: float) -> dict:
    """The same batches straight into the events table: the floor the API stands on."""
    import pandas as pd
    from sqlalchemy import insert

    from features.database import database_engine, event_keys, reflect_schema

    engine = database_engine(url)
    rng = random.Random(99)
    written = 0
    stop_at = time.perf_counter() + duration
    started = time.perf_counter()
    with engine.connect() as connection:
        table = reflect_schema(connection).events
    while time.perf_counter() < stop_at:
        rows = event_batch(customers, rng)
        frame = pd.DataFrame(rows)
        frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], format="ISO8601")
        frame["value"] = float("nan")
        keys = event_keys(frame)
        values = [{"event_key": key, "event_id": row["event_id"],
                   "customer_id": row["customer_id"],
                   "occurred_at": datetime.fromisoformat(row["occurred_at"]),
                   "event_type": row["event_type"], "value": None}
                  for key, row in zip(keys, rows, strict=True)]
        with engine.begin() as connection:
            connection.execute(insert(table), values)
        written += len(values)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return {"events_per_s": written / elapsed}


def by_id(base: str, customers: list[str], *, rate: float, duration: float) -> dict:
    """Open-loop scores by id with top-5 reasons at a steady rate; latency from the due time."""
    import asyncio

    paths = [f"/v1/customers/{c}/score?explain=true&top_k=5" for c in customers]
    sent, errors, latencies = asyncio.run(steady(paths, base=base, rate=rate,
                                                 duration=duration, method="GET", headers=AUTH))
    return {"sent": sent, "errors": errors, "p50_ms": statistics.median(latencies),
            "p99_ms": percentile(latencies, 0.99)}


def settled(outbox_url: str, *, quiet_for: float = 5.0) -> None:
    """Wait until start-up rescoring (customers stamped by the load) stops writing scores."""
    last, since = -1, time.perf_counter()
    while time.perf_counter() - since < quiet_for:
        try:
            count = _count(outbox_url, "scores")
        except Exception:  # the outbox creates its tables on first write
            count = 0
        if count != last:
            last, since = count, time.perf_counter()
        time.sleep(0.5)


def by_id_one_at_a_time(base: str, customers: list[str], *, duration: float) -> dict:
    """Closed loop, one client: each score by id sent when the last answered (service time)."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as http:
        for customer in customers:
            if time.perf_counter() >= stop_at:
                break
            started = time.perf_counter()
            http.get(f"/v1/customers/{customer}/score?explain=true&top_k=5").raise_for_status()
            latencies.append(1000 * (time.perf_counter() - started))
    return {"sent": len(latencies), "p50_ms": statistics.median(latencies),
            "p99_ms": percentile(latencies, 0.99),
            "req_per_s": len(latencies) / (sum(latencies) / 1000)}


def feed_events(base: str, written: list[str], events_per_s: float, duration: float,
                ready: Any, go: Any, ingested: Any) -> None:
    """The ingest side of `by_id_under_ingest`, run in a process of its own (a CRM posting
    batches of 100 events at a steady rate), so building and sending its batches does
    not take the probe client's interpreter. Sets ``ready`` once connected, starts at
    ``go`` and adds the events accepted to ``ingested`` (a shared counter)."""
    rng = random.Random(17)
    interval = BATCH / events_per_s
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as http:
        http.get("/readyz")
        ready.set()
        go.wait()
        due = time.perf_counter()
        stop_at = due + duration
        while time.perf_counter() < stop_at:
            answer = http.post("/v1/events", json=event_batch(written, rng))
            if answer.status_code == 200:
                with ingested.get_lock():
                    ingested.value += answer.json()["inserted"]
            due += interval
            time.sleep(max(0.0, due - time.perf_counter()))


def by_id_under_ingest(base: str, customers: list[str], written: list[str], *, rate: float,
                       events_per_s: float, duration: float) -> dict:
    """Scores by id while a steady stream of events is ingested (batches of 100) by another
    process, as a CRM's writes would come: the probe client keeps its process to itself."""
    context = multiprocessing.get_context("spawn")
    ready, go, ingested = context.Event(), context.Event(), context.Value("q", 0)
    feeder = context.Process(target=feed_events, name="live-bench-feeder",
                             args=(base, written, events_per_s, duration, ready, go, ingested))
    feeder.start()
    if not ready.wait(timeout=120):
        feeder.kill()
        raise RuntimeError("the event feeder process did not start")
    go.set()
    started = time.perf_counter()
    figures = by_id(base, customers, rate=rate, duration=duration)
    feeder.join()
    if feeder.exitcode != 0:
        raise RuntimeError(f"the event feeder process exited with {feeder.exitcode}")
    figures["ingested_events_per_s"] = ingested.value / (time.perf_counter() - started)
    return figures


def freshness(base: str, outbox_url: str, customers: list[str], *, probes: int) -> dict:
    """Ingest one event per customer; time from the 2xx to its action in the outbox."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(outbox_url)
    lags: list[float] = []
    misses = 0
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as http:
        for customer in customers[:probes]:
            body = [{"customer_id": customer, "event_type": "session",
                     "occurred_at": (now_utc() - timedelta(seconds=30)).isoformat()}]
            answer = http.post("/v1/events", json=body)
            answer.raise_for_status()
            acknowledged = time.perf_counter()
            committed = answer.json()["committed_at"].rstrip("Z").replace("T", " ")
            deadline = acknowledged + 30
            while time.perf_counter() < deadline:
                try:
                    with engine.connect() as connection:
                        found = connection.execute(
                            text("SELECT 1 FROM scores WHERE customer_id = :c "
                                 "AND scored_at >= :t"), {"c": customer, "t": committed}).first()
                except OperationalError:  # the outbox creates its tables on first write
                    found = None
                if found:
                    lags.append(time.perf_counter() - acknowledged)
                    break
                time.sleep(0.005)
            else:
                misses += 1
    engine.dispose()
    actions = _count(outbox_url, "actions")
    return {"probes": len(lags), "misses": misses, "median_s": statistics.median(lags),
            "p99_s": percentile(lags, 0.99), "max_s": max(lags), "actions": actions}


def _count(url: str, table: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as connection:
        count = int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    return count


def postgres_schema(url: str) -> tuple[str, Callable[[], None]]:
    from sqlalchemy import create_engine, text

    schema = f"live_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"

    def drop() -> None:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()

    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}", drop


#: `churnlens ARGS` with serving.live's INFO lines in the log ("N customers prepared")
SERVE_LOGGING_LIVE = ("import logging, sys; logging.basicConfig(level=logging.WARNING); "
                      "logging.getLogger('serving.live').setLevel(logging.INFO); "
                      "sys.argv = ['churnlens', *sys.argv[1:]]; import churnlens; churnlens.main()")


def start_server(url: str, *, workdir: Path, env: dict[str, str], outbox_url: str,
                 outreach: bool, log: Path) -> tuple[subprocess.Popen, str]:
    """`churnlens serve` on the database (one worker), its log in ``log``."""
    port = free_port()
    serve_env = env | {
        "CHURNLENS_DATA": url,
        "CHURNLENS_API_KEYS": hashlib.sha256(API_KEY.encode()).hexdigest(),
        "CHURNLENS_OUTBOX_URL": outbox_url,
        "CHURNLENS_RULES": str(workdir / "rules.yaml"),
        "CHURNLENS_MODEL_POLL_SECONDS": "0",
        "CHURNLENS_LIVE_POLL_SECONDS": "1",
        "CHURNLENS_OUTREACH_ENABLED": "true" if outreach else "false",
        **SERVER_ENV,
    }
    with open(log, "w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE_LOGGING_LIVE, "serve", "--port", str(port),
             "--workers", "1", "--log-level", "warning"], env=serve_env, cwd=workdir,
            start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_until(f"{base}/readyz", timeout=1800, process=server, in_a_row=3)
    return server, base


def wait_prepared(log: Path, *, process: subprocess.Popen, timeout: float = 1800) -> float:
    """Wait for the server's "customers prepared" line: the day's matrix is built."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if "customers prepared as of" in log.read_text(errors="replace"):
            return time.perf_counter() - started
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log}")
        time.sleep(0.5)
    raise RuntimeError(f"the day's matrix was not prepared within {timeout} s; see {log}")


def bench_database(label: str, url: str, *, workdir: Path, env: dict[str, str],
                   customers: list[str], args: argparse.Namespace) -> dict:
    subprocess.run([str(VENV_BIN / "churnlens"), "load", "--data", "data", "--into", url],
                   env=env, cwd=workdir, check=True)
    (workdir / "rules.yaml").write_text(RULES)
    outbox = workdir / f"outbox-{label}.db"
    outbox.unlink(missing_ok=True)
    outbox_url = f"sqlite:///{outbox}"
    rng = random.Random(5)
    shuffled = rng.sample(customers, len(customers))
    # disjoint groups: scored by id (their rows stay prepared), written to, probed
    scored, probes = shuffled[: len(shuffled) // 2], shuffled[-args.probes:]
    written = shuffled[len(shuffled) // 2 : -args.probes]
    log = workdir / f"serve-{label}.log"
    server, base = start_server(url, workdir=workdir, env=env, outbox_url=outbox_url,
                                outreach=True, log=log)
    try:
        prepared_s = wait_prepared(log, process=server)
        settled(outbox_url)
        fresh = freshness(base, outbox_url, probes, probes=args.probes)
        api = ingest_rate(base, written, clients=args.clients, duration=args.duration)
        if args.by_id_outreach == "off":  # the by-id phases on a server with outreach off
            stop(server)
            log = workdir / f"serve-{label}-by-id.log"
            server, base = start_server(url, workdir=workdir, env=env, outbox_url=outbox_url,
                                        outreach=False, log=log)
            prepared_s = wait_prepared(log, process=server)
        else:
            settled(outbox_url)  # the ingest phase's rescoring is done
        # warm-up: a sample of the scored customers, once (the matrix is built already)
        with httpx.Client(base_url=base, headers=AUTH, timeout=120) as http:
            for customer in scored[:500]:
                http.get(f"/v1/customers/{customer}/score?explain=true&top_k=5")
        serial = by_id_one_at_a_time(base, scored[500:], duration=args.duration)
        quiet = by_id(base, scored, rate=args.rate, duration=args.duration)
        loaded = by_id_under_ingest(base, scored, written, rate=args.rate,
                                    events_per_s=args.events_rate, duration=args.duration)
    finally:
        stop(server)
    reference = reference_rate(url, written, duration=args.duration)
    return {"database": label, "ingest": api, "reference": reference, "freshness": fresh,
            "by_id_quiet": quiet, "by_id_under_ingest": loaded, "by_id_one_at_a_time": serial,
            "prepare_seconds": prepared_s, "by_id_outreach": args.by_id_outreach}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/churnlens-live-bench"))
    parser.add_argument("--postgres", default=os.environ.get("CHURNLENS_TEST_POSTGRES_URL"))
    parser.add_argument("--switch-interval-ms", type=float, default=None,
                        help="the server's CHURNLENS_SWITCH_INTERVAL_MS (default: its own, "
                             "5, Python's)")
    parser.add_argument("--ingest-processes", type=int, default=None,
                        help="the server's CHURNLENS_INGEST_PROCESSES (default: its own, 1; 0 "
                             "writes ingests in the API process)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100.0, help="scores by id per second")
    parser.add_argument("--events-rate", type=float, default=500.0,
                        help="events per second ingested while scoring by id")
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgresql"],
                        default=["sqlite", "postgresql"])
    parser.add_argument("--by-id-outreach", choices=["on", "off"], default="off",
                        help="outreach on the server the by-id phases run against (on: every "
                        "score by id also writes the outbox, as the rule fires for everyone)")
    args = parser.parse_args()
    if args.switch_interval_ms is not None:
        SERVER_ENV["CHURNLENS_SWITCH_INTERVAL_MS"] = str(args.switch_interval_ms)
    if args.ingest_processes is not None:
        SERVER_ENV["CHURNLENS_INGEST_PROCESSES"] = str(args.ingest_processes)

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNLENS_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    prepare(workdir, customers=args.customers, env=env)

    import pandas as pd

    customers = pd.read_parquet(workdir / "data" / "customers.parquet",
                                columns=["customer_id"])["customer_id"].astype(str).tolist()
    results = []
    sqlite_file = workdir / "live.db"
    sqlite_file.unlink(missing_ok=True)
    if "sqlite" in args.databases:
        results.append(bench_database("SQLite", f"sqlite:///{sqlite_file}", workdir=workdir,
                                      env=env, customers=customers, args=args))
    if args.postgres and "postgresql" in args.databases:
        url, drop = postgres_schema(args.postgres)
        try:
            results.append(bench_database("PostgreSQL", url, workdir=workdir, env=env,
                                          customers=customers, args=args))
        finally:
            drop()

    print(f"\n{args.customers:,} customers; ingestion: {args.clients} clients, batches of "
          f"{BATCH} events, {args.duration:g} s; freshness: {args.probes} probes\n")
    print("| database | API events/s | p50 / p99 per batch (ms) | direct insert events/s "
          "| API / direct | ingest → outbox median / p99 (ms) |")
    print("|---|---|---|---|---|---|")
    for row in results:
        api, ref, fresh = row["ingest"], row["reference"], row["freshness"]
        print(f"| {row['database']} | {api['events_per_s']:,.0f} | {api['p50_ms']:.0f} / "
              f"{api['p99_ms']:.0f} | {ref['events_per_s']:,.0f} | "
              f"{api['events_per_s'] / ref['events_per_s']:.2f} | "
              f"{1000 * fresh['median_s']:.0f} / {1000 * fresh['p99_s']:.0f} |")
    print(f"\nScores by id with top-5 reasons, open loop at {args.rate:g}/s for "
          f"{args.duration:g} s, latency from each request's due time (ms); outreach "
          f"{args.by_id_outreach} on that server:\n")
    print(f"| database | one at a time: p50 / p99, req/s | quiet p50 / p99 | while ingesting "
          f"~{args.events_rate:g} events/s: p50 / p99 | events/s reached | errors |")
    print("|---|---|---|---|---|---|")
    for row in results:
        quiet, loaded = row["by_id_quiet"], row["by_id_under_ingest"]
        serial = row["by_id_one_at_a_time"]
        print(f"| {row['database']} | {serial['p50_ms']:.1f} / {serial['p99_ms']:.1f}, "
              f"{serial['req_per_s']:.0f} | {quiet['p50_ms']:.1f} / {quiet['p99_ms']:.1f} | "
              f"{loaded['p50_ms']:.1f} / {loaded['p99_ms']:.1f} | "
              f"{loaded['ingested_events_per_s']:,.0f} | {quiet['errors'] + loaded['errors']} |")
    (workdir / "live_bench.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
