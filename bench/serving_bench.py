"""Serving benchmark: churnlens (score by id, top-5 reasons) vs `mlflow models serve`.

Run from the repository root (needs `wrk`: `apt-get install wrk`):

    .venv/bin/python bench/serving_bench.py --customers 100000 --workdir /tmp/clbench100k

Steps, all in one run so both servers meet the same machine state:

1. unless the work directory already holds them, generate ``--customers``
   customers (`churnlens generate`) and train them (`churnlens train`), which
   registers ``models:/churnlens@champion`` in ``WORKDIR/mlflow.db``;
2. `churnlens serve --workers W` with that dataset; single-customer scores by
   id with ``explain=true&top_k=5`` for random customers:
   - throughput: `wrk` with ``--concurrency`` connections (closed loop);
   - latency: an open-loop client sending a steady ``--rate`` requests/s,
     latency measured from each request's scheduled send time (so a stall
     counts against the server; no coordinated omission);
3. `mlflow models serve --workers W` of the same registered pyfunc, one
   customer's feature row per request (scores only, no reasons), same load.

Results are printed as a Markdown table and written to ``WORKDIR/serving_bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
API_KEY = "clk_bench_key_0123456789abcdef"


@dataclass
class Figures:
    server: str
    workers: int
    what: str
    wrk_rps: float
    wrk_p50_ms: float
    wrk_p99_ms: float
    wrk_errors: int
    steady_rate: float
    steady_sent: int
    steady_errors: int
    steady_p50_ms: float
    steady_p99_ms: float
    steady_max_ms: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(command: list[str], *, env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    print("$", " ".join(command), flush=True)
    subprocess.run(command, env=env, cwd=cwd, check=True)
    return time.perf_counter() - started


def prepare(workdir: Path, *, customers: int, env: dict[str, str]) -> dict[str, float]:
    """Generate and train unless done before (training 100k customers takes a while)."""
    timings: dict[str, float] = {}
    if not (workdir / "data" / "customers.parquet").exists():
        timings["generate_seconds"] = run(
            [str(VENV_BIN / "churnlens"), "generate", "--customers", str(customers), "--out",
             "data", "--seed", "1", "--kind", "mixed", "--format", "parquet"],
            env=env, cwd=workdir)
    if not (workdir / "mlflow.db").exists():
        timings["train_seconds"] = run(
            [str(VENV_BIN / "churnlens"), "train", "--data", "data"], env=env, cwd=workdir)
    return timings


def wait_until(url: str, *, timeout: float, process: subprocess.Popen,
               in_a_row: int = 30) -> float:
    """Wait for ``in_a_row`` consecutive 200s on fresh connections: every worker is ready."""
    started = time.perf_counter()
    streak = 0
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            streak = streak + 1 if httpx.get(url, timeout=2).status_code == 200 else 0
        except httpx.HTTPError:
            streak = 0
        if streak >= in_a_row:
            return time.perf_counter() - started
        time.sleep(0.05 if streak else 0.5)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """Stop a server this script started (its own process group, by id)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def lua_script(path: Path, *, method: str, paths: list[str] | None = None,
               bodies: list[str] | None = None, headers: dict[str, str]) -> Path:
    """A wrk script that picks a random path or body per request."""
    lines = [f'wrk.method = "{method}"']
    for name, value in headers.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if paths:
        lines.append("local paths = {" + ",".join(json.dumps(p) for p in paths) + "}")
        lines.append("request = function() return wrk.format(nil, "
                     "paths[math.random(#paths)]) end")
    if bodies:
        lines.append("local bodies = {" + ",".join(
            "[==[" + body + "]==]" for body in bodies) + "}")
        lines.append("request = function() return wrk.format(nil, nil, nil, "
                     "bodies[math.random(#bodies)]) end")
    path.write_text("\n".join(lines) + "\n")
    return path


def _ms(text: str | None) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)", text or "")
    if match is None:
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def _group(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1) if match else None


def wrk(url: str, script: Path, *, concurrency: int, duration: int) -> tuple[float, float, float,
                                                                            int]:
    """Closed-loop throughput with wrk: (requests/s, p50 ms, p99 ms, errors)."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "30s", "--latency",
               "-s",
               str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    with (script.parent / "wrk_outputs.txt").open("a") as log:
        log.write(f"$ {' '.join(command)}\n{output}\n")
    rps = float(_group(r"Requests/sec:\s+([\d.]+)", output) or "nan")
    # the latency distribution's own lines (a "…68.50%" column elsewhere also ends in "50%")
    p50 = _ms(_group(r"(?m)^\s*50%\s+(\S+)", output))
    p99 = _ms(_group(r"(?m)^\s*99%\s+(\S+)", output))
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: .*?(\d+) timeout"):
        match = re.search(pattern, output)
        errors += int(match.group(1)) if match else 0
    return rps, p50, p99, errors


async def steady(url_or_paths: list[str], *, base: str, rate: float, duration: float,
                 method: str, headers: dict[str, str], bodies: list[str] | None = None
                 ) -> tuple[int, int, list[float]]:
    """Open loop: request i is due at start + i/rate; latency counts from the due time."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                 timeout=30) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2

        async def one(i: int) -> None:
            nonlocal errors
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                if method == "GET":
                    answer = await client.get(random.choice(url_or_paths))
                else:
                    answer = await client.post(url_or_paths[0], content=random.choice(bodies),
                                               headers={"Content-Type": "application/json"})
                if answer.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append((loop.time() - due) * 1000)

        await asyncio.gather(*(one(i) for i in range(total)))
    return total, errors, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure(name: str, *, workers: int, what: str, base: str, method: str, paths: list[str],
            bodies: list[str] | None, headers: dict[str, str], args: argparse.Namespace,
            workdir: Path) -> Figures:
    script = lua_script(workdir / f"{name}.lua", method=method,
                        paths=paths if method == "GET" else None, bodies=bodies,
                        headers=headers | ({"Content-Type": "application/json"}
                                          if bodies else {}))
    target = base + (paths[0] if method == "POST" else "")
    # warm both servers the same way before measuring
    wrk(target, script, concurrency=args.concurrency, duration=5)
    rps, p50, p99, errors = wrk(target, script, concurrency=args.concurrency,
                                duration=args.duration)
    sent, steady_errors, latencies = asyncio.run(steady(
        paths, base=base, rate=args.rate, duration=args.duration, method=method,
        headers=headers, bodies=bodies))
    figures = Figures(
        server=name, workers=workers, what=what, wrk_rps=rps, wrk_p50_ms=p50, wrk_p99_ms=p99,
        wrk_errors=errors, steady_rate=args.rate, steady_sent=sent, steady_errors=steady_errors,
        steady_p50_ms=statistics.median(latencies), steady_p99_ms=percentile(latencies, 99),
        steady_max_ms=max(latencies))
    print(json.dumps(asdict(figures)), flush=True)
    return figures


def feature_bodies(workdir: Path, customer_ids: list[str], env: dict[str, str]) -> list[str]:
    """One customer's features per body, in the pyfunc's input format (dataframe_split)."""
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    from features.io import read_dataset
    from features.pipeline import build_features
    from models.loading import load_model

    bundle = load_model("models:/churnlens@champion").bundle
    dataset = read_dataset(workdir / "data").dataset.for_customers(customer_ids)
    features = build_features(dataset, as_of=dataset.default_as_of(),
                              event_types=bundle.event_types)
    # the model's columns as the bundle completes them (business-season inputs included)
    frame = bundle.prepare_matrix(features).features[bundle.feature_names].reset_index()
    for column in frame.columns:
        if str(frame[column].dtype) == "category":
            frame[column] = frame[column].astype(object)
    frame = frame.astype(object).where(frame.notna(), None)
    columns = [str(c) for c in frame.columns]
    return [json.dumps({"dataframe_split": {"columns": columns, "data": [row]}})
            for row in frame.to_numpy().tolist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/churnlens-serving-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--sample", type=int, default=2000, help="customers to draw from")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--with-outbox", action="store_true",
                        help="also measure with outreach rules and the SQLite outbox on")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNLENS_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow execs uvicorn
    timings = prepare(workdir, customers=args.customers, env=env)

    import pandas as pd

    customers = pd.read_parquet(workdir / "data" / "customers.parquet", columns=["customer_id"])
    rng = random.Random(7)
    sample = rng.sample(list(customers["customer_id"].astype(str)),
                        min(args.sample, len(customers)))
    results: list[Figures] = []
    auth = {"Authorization": f"Bearer {API_KEY}"}

    paths = [f"/v1/customers/{c}/score?explain=true&top_k=5" for c in sample]
    plain = [p.replace("explain=true", "explain=false") for p in paths]
    runs = [("churnlens", False, [("churnlens", "GET by id, explain=true, top_k=5", paths),
                                  ("churnlens-no-reasons", "GET by id, explain=false", plain)])]
    if args.with_outbox:
        runs.append(("churnlens-outbox", True, [
            ("churnlens+outbox", "GET by id, reasons, rules + SQLite outbox write", paths)]))
    for label, outreach, measurements in runs:
        (workdir / "outbox.db").unlink(missing_ok=True)
        port = free_port()
        serve_env = env | {
            "CHURNLENS_DATA": str(workdir / "data"),
            "CHURNLENS_API_KEYS": hashlib.sha256(API_KEY.encode()).hexdigest(),
            "CHURNLENS_OUTREACH_ENABLED": "true" if outreach else "false",
            "CHURNLENS_OUTBOX_URL": f"sqlite:///{workdir / 'outbox.db'}",
            "CHURNLENS_MODEL_POLL_SECONDS": "0",
        }
        server = subprocess.Popen(
            [str(VENV_BIN / "churnlens"), "serve", "--port", str(port), "--workers",
             str(args.workers), "--log-level", "warning"],
            env=serve_env, cwd=workdir, start_new_session=True)
        try:
            timings[f"{label}_ready_seconds"] = wait_until(
                f"http://127.0.0.1:{port}/readyz", timeout=3600, process=server)
            for name, what, run_paths in measurements:
                results.append(measure(name, workers=args.workers, what=what,
                                       base=f"http://127.0.0.1:{port}", method="GET",
                                       paths=run_paths, bodies=None, headers=auth, args=args,
                                       workdir=workdir))
        finally:
            stop(server)

    if not args.skip_mlflow:
        bodies = feature_bodies(workdir, sample[:300], env)
        port = free_port()
        mlflow_server = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/churnlens@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w",
             str(args.workers)],
            env=env, cwd=workdir, start_new_session=True)
        try:
            timings["mlflow_ready_seconds"] = wait_until(
                f"http://127.0.0.1:{port}/ping", timeout=600, process=mlflow_server)
            results.append(measure("mlflow-models-serve", workers=args.workers,
                                   what="POST /invocations, one feature row, scores only",
                                   base=f"http://127.0.0.1:{port}", method="POST",
                                   paths=["/invocations"], bodies=bodies, headers={},
                                   args=args, workdir=workdir))
        finally:
            stop(mlflow_server)

    report = {"customers": args.customers, "workers": args.workers,
              "concurrency": args.concurrency, "rate": args.rate, "duration": args.duration,
              "cpus": os.cpu_count(), "load_average": os.getloadavg(), "timings": timings,
              "results": [asdict(r) for r in results]}
    baseline = [r for r in results if r.server == "mlflow-models-serve"]
    report["ratio_with_reasons_vs_mlflow"] = (
        results[0].wrk_rps / baseline[0].wrk_rps if baseline else None)
    (workdir / "serving_bench.json").write_text(json.dumps(report, indent=2))
    print()
    print(f"| server | request | req/s at {args.concurrency} conns (wrk) | p50 / p99 ms (wrk) "
          f"| p50 / p99 ms at {args.rate:g} req/s | errors |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.server} ({r.workers} workers) | {r.what} | {r.wrk_rps:,.0f} | "
              f"{r.wrk_p50_ms:.1f} / {r.wrk_p99_ms:.1f} | {r.steady_p50_ms:.1f} / "
              f"{r.steady_p99_ms:.1f} | {r.wrk_errors + r.steady_errors} |")
    if baseline:
        print(f"\nthroughput ratio churnlens (with reasons) / mlflow models serve (no reasons): "
              f"{results[0].wrk_rps / baseline[0].wrk_rps:.1f}x")
    print(f"timings: {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
    print(f"load average during the run: {os.getloadavg()}")


if __name__ == "__main__":
    main()
