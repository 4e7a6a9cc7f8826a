"""Batch scoring benchmark: `churnlens score` end to end, against shap.TreeExplainer.

Generates (once, cached in --data) ``--customers`` customers averaging 5 orders and 20
events each, as Parquet. Then, each in a fresh process so that its peak RSS is its own,
`serving.batch.run_batch` (the code behind `churnlens score`) from the files to the output
file, with ``--explain none``, ``at-risk`` and ``all``: customers/s and peak RSS.

In the same run, the reference: ``shap.TreeExplainer(booster).shap_values(X)`` plus
``booster.predict(X)`` on the same churn model, on a ``--sample``-row sample of model rows
(per-row throughput), and the ratio of the ``--explain all`` throughput to it. Peak RSS
of a Dask run (``--engine dask``) is the driver's only; workers are separate processes.
With the local engine's worker processes (``--workers``, default one per core), memory is
also reported for the whole process tree, sampled every 0.25 s from /proc: the peak of the
summed RSS (counts pages shared between processes once per process, so an upper bound)
and of the summed PSS (shared pages split between the processes sharing them).

The model is the churn bundle of bench/explain_bench.py (trained once by churnlens's own
`fit_bundle` and cached), or ``--bundle DIR``.

    .venv/bin/python bench/batch_bench.py --customers 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
END = date(2024, 12, 31)


def generate(directory: Path, *, customers: int) -> dict:
    from features.generate import generate_dataset

    marker = directory / "bench.json"
    if marker.exists():
        return json.loads(marker.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    data = generate_dataset(customers=customers, seed=42, end=END, kind="ecommerce",
                            orders_per_customer=5, events_per_customer=20)
    data.write(directory, fmt="parquet")
    info = {"customers": customers, **{n: len(f) for n, f in data.tables.items()}}
    marker.write_text(json.dumps(info))
    return info


def run_score(data: Path, bundle: Path, explain: str, chunk_size: int, engine: str,
              workers: int | None) -> dict:
    """One `churnlens score` run in this (fresh) process."""
    from models.loading import load_model
    from serving.batch import default_workers, run_batch
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer

    out = data.parent / f"{data.name}-scores-{explain}.parquet"
    workers = workers or default_workers()
    started = time.perf_counter()
    scorer = Scorer(load_model(str(bundle)), rules=load_rules(None))
    summary = run_batch(data=data, out=out, scorer=scorer, model_uri=str(bundle),
                        explain=explain, chunk_size=chunk_size, engine=engine, workers=workers)
    seconds = time.perf_counter() - started
    return {"explain": explain, "engine": engine, "workers": workers,
            "seconds": round(seconds, 1),
            "customers_per_s": round(summary.rows_scored / seconds),
            "rows_scored": summary.rows_scored, "rows_rejected": summary.rows_rejected,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_reference(bundle: Path, sample: int) -> dict:
    """shap.TreeExplainer + predict on ``sample`` model rows, the obvious way."""
    import shap

    sys.path.insert(0, str(ROOT / "bench"))
    from explain_bench import sample_features

    from models.bundle import ChurnBundle

    churn = ChurnBundle.load(bundle)
    X = sample_features(churn, rows=sample)
    explainer = shap.TreeExplainer(churn.churn_booster)
    started = time.perf_counter()
    explainer.shap_values(X)
    churn.churn_booster.predict(X)
    seconds = time.perf_counter() - started
    # the CLV trees set the cost of --explain none: 287 at Nov 30, 1,499 since the CLV booster
    # averages 5 seeds (clv_seeds), so figures of bundles with other counts do not compare
    return {"rows": len(X), "seconds": round(seconds, 1), "rows_per_s": round(len(X) / seconds),
            "trees": churn.churn_booster.num_trees(),
            "clv_trees": churn.clv_booster.num_trees() if churn.clv_booster else 0}


def _tree(root: int) -> list[int]:
    """``root`` and its live descendants (from /proc/PID/task/TID/children)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in children.read_text().split())
            except OSError:
                continue
    return found


def _memory_mb(pids: list[int]) -> tuple[float, float]:
    """(summed RSS, summed PSS) of ``pids`` in MB, from smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss / 1024, pss / 1024


def child(*arguments: str) -> dict:
    """Run one step in a fresh process; add the peak memory of its process tree."""
    process = subprocess.Popen([sys.executable, __file__, *arguments], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = [0.0, 0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            for k, value in enumerate(_memory_mb(_tree(process.pid))):
                peaks[k] = max(peaks[k], value)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"step {arguments} failed:\n{stderr}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["tree_peak_rss_mb"], result["tree_peak_pss_mb"] = (round(v) for v in peaks)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--modes", default="none,at-risk,all")
    parser.add_argument("--engine", default="local", choices=["local", "dask"])
    parser.add_argument("--workers", type=int, default=None,
                        help="local engine worker processes (default: one per core)")
    parser.add_argument("--step", choices=["score", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--explain", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.step == "score":
        print(json.dumps(run_score(args.data, args.bundle, args.explain, args.chunk_size,
                                   args.engine, args.workers)))
        return
    if args.step == "reference":
        print(json.dumps(run_reference(args.bundle, args.sample)))
        return

    sys.path.insert(0, str(ROOT / "bench"))
    from explain_bench import BUNDLE_CACHE, train_bundle

    bundle = args.bundle or train_bundle(BUNDLE_CACHE / "10000-300", customers=10_000,
                                         rounds=300)
    data = args.data or Path(f"/tmp/churnlens-batch-bench-{args.customers}/data")
    info = generate(data, customers=args.customers)
    print(f"dataset {data}: {json.dumps(info)}; bundle {bundle}", flush=True)
    report: dict[str, object] = {"dataset": info, "runs": []}
    for explain in args.modes.split(","):
        result = child("--step", "score", "--data", str(data), "--bundle", str(bundle),
                       "--explain", explain, "--chunk-size", str(args.chunk_size),
                       "--engine", args.engine,
                       *(["--workers", str(args.workers)] if args.workers else []))
        report["runs"].append(result)
        print(f"score --explain {explain}: {json.dumps(result)}", flush=True)
    reference = child("--step", "reference", "--bundle", str(bundle), "--sample",
                      str(args.sample))
    report["reference"] = reference
    print(f"reference shap.TreeExplainer + predict: {json.dumps(reference)}", flush=True)
    explained = [r for r in report["runs"] if r["explain"] == "all"]
    if explained:
        report["all_vs_reference"] = round(
            explained[0]["customers_per_s"] / reference["rows_per_s"], 1)
        print(f"--explain all / reference throughput: {report['all_vs_reference']}x")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
