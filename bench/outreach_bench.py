"""Benchmark: deliver 10,000 outreach actions from the outbox to a local webhook receiver.

Reports the relay's throughput (actions/s, median of several runs) next to a
peer measured in the same run: the same signed requests posted by the same
HTTP client and thread pool *without* the outbox (no claims, no state
updates). Their ratio is the price of durability.

    .venv/bin/python bench/outreach_bench.py [--actions 10000] [--runs 3] [--outbox URL]

The receiver is a uvicorn (h11) app in its own process on 127.0.0.1 that counts
requests and verifies every 100th signature.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import sqlalchemy


def receiver_app(secret: str):
    """A minimal ASGI receiver: 204 for every POST; GET /count returns the tally."""
    from standardwebhooks import Webhook

    webhook = Webhook(secret)
    state = {"count": 0, "bad": 0}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            payload = f"{state['count']} {state['bad']}".encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": payload})
            return
        state["count"] += 1
        if state["count"] % 100 == 0:
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            try:
                webhook.verify(body, headers)
            except Exception:
                state["bad"] += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def serve(port: int, secret: str) -> None:
    import uvicorn

    uvicorn.run(receiver_app(secret), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, http="h11", backlog=2048)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def counts(url: str) -> tuple[int, int]:
    count, bad = httpx.get(url + "/count").text.split()
    return int(count), int(bad)


def actions(n: int, url: str, run: int):
    from serving.outreach.rules import TriggeredAction

    return [
        TriggeredAction(
            customer_id=f"r{run}-c{i:06d}", rule="win-back", action="win_back_offer",
            channel=url + "/hook", cooldown_days=30, as_of=datetime(2024, 5, 1),
            model_version="7", payload={"offer": "win_back_discount", "churn_probability": 0.8,
                                        "reasons": ["No order for 94 days"]},
            why=["No order for 94 days"],
        )
        for i in range(n)
    ]


def relay_run(
    n: int, url: str, secret: str, outbox_url: str, run: int, args
) -> tuple[float, float]:
    from serving.outreach.outbox import Outbox
    from serving.outreach.relay import Relay
    from serving.settings import OutreachSettings

    schema = None
    if not outbox_url.startswith("sqlite"):
        schema = f"outreach_bench_{uuid.uuid4().hex[:10]}"  # never touch existing tables
        with sqlalchemy.create_engine(outbox_url).begin() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    outbox = Outbox(outbox_url, schema=schema)
    items = actions(n, url, run)
    started = time.perf_counter()
    outbox.record_scores([], items)
    recorded = time.perf_counter() - started
    settings = OutreachSettings(
        outbox_url=outbox_url, webhook_secret=secret, relay_batch_size=args.batch,
        relay_concurrency=args.concurrency, request_timeout_seconds=10, relay_lease_seconds=600,
    )
    before, _ = counts(url)
    with Relay(outbox, settings=settings) as relay:
        started = time.perf_counter()
        report = relay.drain()
        elapsed = time.perf_counter() - started
    after, bad = counts(url)
    assert report.delivered == n, f"relay delivered {report.delivered} of {n}: {report.errors}"
    assert after - before == n, f"receiver got {after - before} of {n}"
    assert bad == 0, "signatures must verify"
    if schema is not None:
        outbox.close()
        with sqlalchemy.create_engine(outbox_url).begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    outbox.close()
    return n / elapsed, n / recorded


def bare_run(n: int, url: str, secret: str, run: int, args) -> float:
    """The peer: the same signed POSTs through the same client and pool, no outbox."""
    from serving.outreach.outbox import action_id_for
    from serving.outreach.webhooks import encode_body, sign_headers

    items = actions(n, url, run)
    client = httpx.Client(
        timeout=10,
        limits=httpx.Limits(max_connections=args.concurrency,
                            max_keepalive_connections=args.concurrency),
        headers={"content-type": "application/json"},
    )

    def post(item) -> int:
        action_id = action_id_for(item.customer_id, item.rule, item.period)
        body = encode_body({"type": "outreach.win_back_offer", "data": {
            "action_id": action_id, "customer_id": item.customer_id, **item.payload}})
        headers = sign_headers(secret, webhook_id=action_id, body=body)
        return client.post(item.channel, content=body.encode(), headers=headers).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        codes = list(pool.map(post, items))
    elapsed = time.perf_counter() - started
    client.close()
    assert all(code == 204 for code in codes)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--outbox", help="SQLAlchemy URL (default: a fresh SQLite file per run)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.secret)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from serving.outreach.webhooks import new_secret

    secret = new_secret()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--secret", secret])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                counts(url)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the receiver did not start") from None
                time.sleep(0.1)
        relay_rates, record_rates, bare_rates = [], [], []
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                outbox_url = args.outbox or f"sqlite:///{folder}/outbox.db"
                rate, record_rate = relay_run(args.actions, url, secret, outbox_url, run, args)
            relay_rates.append(rate)
            record_rates.append(record_rate)
            bare_rates.append(bare_run(args.actions, url, secret, 1000 + run, args))
            print(f"run {run + 1}: relay {rate:,.0f} actions/s · bare HTTP {bare_rates[-1]:,.0f}"
                  f" req/s · outbox writes {record_rate:,.0f} actions/s")
    finally:
        server.terminate()
        server.wait(10)
    relay, bare = statistics.median(relay_rates), statistics.median(bare_rates)
    print(f"\n{args.actions:,} actions, batch {args.batch}, concurrency {args.concurrency}, "
          f"outbox {args.outbox or 'SQLite file'}; median of {args.runs} runs")
    print(f"relay (claim → sign → POST → record):  {relay:,.0f} actions/s")
    print(f"bare signed POSTs, no outbox (peer):   {bare:,.0f} requests/s")
    print(f"relay / bare:                          {relay / bare:.2f}")
    print(f"record_scores (actions into outbox):   {statistics.median(record_rates):,.0f}/s")


if __name__ == "__main__":
    main()
