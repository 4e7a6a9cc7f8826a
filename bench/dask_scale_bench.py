"""Dask scale-out benchmark: driver memory flat in the customer base, workers bounded by
their partition, a LocalCluster of 2 worker processes against the local engine.

Datasets (cached under --work): a base of ``--base`` generated customers (ecommerce, about
5 orders and 20 events each) is copied with distinct id prefixes (``K000-``, ``K001-``,
...) up to each size in ``--sizes`` and written straight into partitions of about
``--per-partition`` customers (`features.partitioned.PartitionWriter`, one batch of
copies at a time, so no process ever holds the large dataset). Copies keep the data's
shape (rows per customer, value distributions) without simulating 2M customers.

Then, each step in a fresh process (so that peak RSS is its own):

- ``score`` with ``--engine dask`` on a LocalCluster of 2 worker processes (1 thread
  each), at every size: customers/s, the driver's peak RSS (the process that submits the
  tasks; it also runs the LocalCluster's scheduler), each worker's peak RSS (from the
  workers themselves), against the largest partition's size on disk and in memory.
- at the smallest size, ``score`` with the local engine (2 worker processes, the default
  on this machine) on the same customers as one plain Parquet dataset, and the check that
  both outputs are identical row for row; the throughput ratio dask / local, as medians
  of ``--repeats`` alternating runs (the machine is shared, so single runs are noisy).

Peak RSS is each process's own VmHWM (the dataset is built in a child process too, so the
parent never holds it).

    nice -n 10 .venv/bin/python bench/dask_scale_bench.py --sizes 250000,2000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
END = date(2024, 12, 31)


def base_dataset(work: Path, customers: int):
    """The generated, validated base (cached as Parquet)."""
    from features.generate import generate_dataset
    from features.io import read_dataset

    directory = work / f"base-{customers}"
    if not (directory / "done").exists():
        generate_dataset(customers=customers, seed=42, end=END, kind="ecommerce",
                         orders_per_customer=5, events_per_customer=20
                         ).write(directory, fmt="parquet")
        (directory / "done").write_text("")
    return read_dataset(directory).dataset


def copies(base, first: int, count: int):
    """``count`` copies of the base with id prefixes K{first}.. (one Dataset)."""
    from dataclasses import replace

    import pandas as pd

    tables = {}
    for name in base.present_tables:
        frame = base.table(name)
        pieces = []
        for k in range(first, first + count):
            piece = frame.copy()
            piece["customer_id"] = f"K{k:03d}-" + piece["customer_id"].astype(str)
            if "order_id" in piece:
                piece["order_id"] = f"K{k:03d}-" + piece["order_id"].astype(str)
            pieces.append(piece)
        tables[name] = pd.concat(pieces, ignore_index=True)
    return replace(base, **tables)


def build(work: Path, base_customers: int, size: int, per_partition: int,
          plain: bool) -> dict:
    """The partitioned dataset of ``size`` customers (and, if asked, the plain one)."""
    from features.io import write_dataset
    from features.partitioned import PartitionWriter, read_manifest

    parts = work / f"parts-{size}"
    if not (parts / "manifest.json").exists():
        base = base_dataset(work, base_customers)
        total = size // base_customers
        writer = PartitionWriter(str(parts), partitions=max(1, size // per_partition)).start()
        batch = max(1, 250_000 // base_customers)
        for first in range(0, total, batch):
            writer.write(copies(base, first, min(batch, total - first)))
        rows = {n: len(base.table(n)) * total for n in base.present_tables}
        writer.close(rows_read=rows, rows_rejected=dict.fromkeys(rows, 0))
    flat = work / f"plain-{size}"
    if plain and not (flat / "done").exists():
        base = base_dataset(work, base_customers)
        whole = copies(base, 0, size // base_customers)
        write_dataset({n: whole.table(n) for n in whole.present_tables}, flat, fmt="parquet")
        (flat / "done").write_text("")
    manifest = read_manifest(str(parts))
    largest = max(range(manifest.partitions), key=lambda k: manifest.rows[k]["customers"])
    disk = sum(p.stat().st_size for p in (parts / f"part-{largest:05d}").iterdir())
    return {"customers": manifest.customers, "partitions": manifest.partitions,
            "rows": {t: sum(p[t] for p in manifest.rows) for t in manifest.tables},
            "largest_partition": {"number": largest, **manifest.rows[largest],
                                  "parquet_mb": round(disk / 2**20, 1)}}


def partition_memory_mb(parts: Path, number: int) -> float:
    """The validated tables of one partition in memory (deep), in MB."""
    from features.partitioned import read_manifest, read_partition

    dataset = read_partition(str(parts), number, read_manifest(str(parts))).dataset
    return round(sum(dataset.table(n).memory_usage(deep=True).sum()
                     for n in dataset.present_tables) / 2**20, 1)


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that across exec, so
    a child would report its parent's peak if that was higher."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _scorer(bundle: Path):
    from models.loading import load_model
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer

    return Scorer(load_model(str(bundle)), rules=load_rules(None))


def _reset_peak() -> None:
    """Start this process's VmHWM again from its current RSS (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def _rest_mb() -> float:
    """This process's RSS once what it freed is handed back (the worker's floor: imports,
    model, compiled explanation code, Dask)."""
    from features.cluster import release_memory

    release_memory()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024)
    return float("nan")


def step_dask(parts: Path, out: Path, bundle: Path, chunk_size: int) -> dict:
    """`churnlens score --engine dask` on a LocalCluster of 2 worker processes.

    Workers' peaks are taken per phase: the partition tasks (read, validate, score, write
    a part), then the merge task (VmHWM reset in between).
    """
    import serving.partitioned_batch as partitioned
    from features.cluster import dask_client
    from serving.partitioned_batch import run_partitioned_batch

    scorer = _scorer(bundle)
    phases: dict[str, dict[str, float]] = {}
    merge = partitioned.run_one

    def measured_merge(*args, client, **kwargs):
        phases["partitions"] = client.run(_peak_mb)
        client.run(_reset_peak)
        began = time.perf_counter()
        try:
            return merge(*args, client=client, **kwargs)
        finally:
            phases["seconds"] = {"partitions": began - ready,
                                 "merge": time.perf_counter() - began}

    partitioned.run_one = measured_merge
    started = time.perf_counter()
    with dask_client(None, workers=2) as client:
        ready = time.perf_counter()
        client.run(_reset_peak)  # from here on, the run's own peak
        summary = run_partitioned_batch(data=str(parts), out=str(out), scorer=scorer,
                                        model_uri=str(bundle), client=client,
                                        chunk_size=chunk_size)
        seconds = time.perf_counter() - ready
        phases["merge"] = client.run(_peak_mb)
        rest = client.run(_rest_mb)
    total = time.perf_counter() - started
    return {"engine": "dask", "seconds": round(total, 1),
            "customers_per_s": round(summary.rows_scored / total),
            "run_s": round(seconds, 1), "cluster_start_s": round(ready - started, 1),
            "partition_tasks_s": round(phases["seconds"]["partitions"], 1),
            "merge_s": round(phases["seconds"]["merge"], 1),
            "rows_scored": summary.rows_scored, "rows_rejected": summary.rows_rejected,
            "driver_peak_rss_mb": _peak_mb(),
            "worker_peak_rss_mb": sorted(max(phases["partitions"][w], phases["merge"][w])
                                         for w in rest),
            "worker_partition_phase_peak_mb": sorted(phases["partitions"].values()),
            "worker_merge_phase_peak_mb": sorted(phases["merge"].values()),
            "worker_rest_rss_mb": sorted(rest.values())}


def _rss_mb() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text().splitlines()
    values = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in status
              if line.startswith(("VmRSS:", "VmHWM:"))}
    return values["VmRSS"], values["VmHWM"]


def step_profile(parts: Path, out: Path, bundle: Path, chunk_size: int) -> dict:
    """RSS after each step of one partition's scoring task, in a fresh process: where a
    worker's memory goes (read and validate, the first chunk, the rest, release)."""
    import lightgbm  # noqa: F401

    from features.cluster import release_memory
    from features.partitioned import read_manifest
    from serving.partitioned_batch import score_partition
    from serving.scorer import BATCH_COLUMNS, BATCH_TAIL_COLUMNS

    marks: dict[str, tuple[int, int]] = {"imports": _rss_mb()}
    scorer = _scorer(bundle)
    marks["model"] = _rss_mb()
    manifest = read_manifest(str(parts))
    largest = max(range(manifest.partitions), key=lambda k: manifest.rows[k]["customers"])
    columns = [*BATCH_COLUMNS, *(f"reason_{k}" for k in range(1, 6)), *BATCH_TAIL_COLUMNS]
    out.mkdir(parents=True, exist_ok=True)
    for run in ("first run (compiles the explanation code)", "second run"):
        _reset_peak()
        score_partition(largest, scorer=scorer, data=str(parts), manifest=manifest,
                        as_of=manifest.default_as_of(), explain="all", top_k=5,
                        chunk_size=chunk_size, work=str(out), columns=columns,
                        row_group=4096)
        marks[run] = _rss_mb()
        release_memory()
        marks[f"{run}, released"] = _rss_mb()
    return {"engine": "profile", "partition": largest, "chunk_size": chunk_size,
            "rss_mb_and_peak_mb": marks}


def step_baseline(parts: Path, out: Path, bundle: Path, chunk_size: int) -> dict:
    """The driver's floor: the same imports (dask, distributed, lightgbm, pandas,
    pyarrow), the model loaded and a LocalCluster of 2 workers started, no data."""
    import lightgbm  # noqa: F401

    from features.cluster import dask_client, share
    from serving.partitioned_batch import run_partitioned_batch  # noqa: F401

    scorer = _scorer(bundle)
    with dask_client(None, workers=2) as client:
        share(client, scorer, name="model").result()
    return {"engine": "baseline", "driver_peak_rss_mb": _peak_mb()}


def step_local(data: Path, out: Path, bundle: Path, chunk_size: int) -> dict:
    """`churnlens score` with the local engine (2 worker processes) on the plain dataset."""
    from serving.batch import run_batch

    scorer = _scorer(bundle)
    started = time.perf_counter()
    summary = run_batch(data=data, out=out, scorer=scorer, model_uri=str(bundle),
                        chunk_size=chunk_size, workers=2)
    seconds = time.perf_counter() - started
    return {"engine": "local", "seconds": round(seconds, 1),
            "customers_per_s": round(summary.rows_scored / seconds),
            "rows_scored": summary.rows_scored, "rows_rejected": summary.rows_rejected,
            "driver_peak_rss_mb": _peak_mb()}


def child(*arguments: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *arguments], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"step {arguments} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median_run(runs: list[dict]) -> dict:
    """Median customers/s and peaks over repeated runs."""
    import statistics

    median = {key: statistics.median(r[key] for r in runs)
              for key in ("seconds", "customers_per_s", "driver_peak_rss_mb")}
    for key in ("worker_peak_rss_mb", "worker_partition_phase_peak_mb",
                "worker_merge_phase_peak_mb", "worker_rest_rss_mb"):
        if key in runs[0]:
            median[key] = max(max(r[key]) for r in runs)
    return median


def identical(first: Path, second: Path) -> bool:
    import pandas as pd

    try:
        pd.testing.assert_frame_equal(pd.read_parquet(first), pd.read_parquet(second))
    except AssertionError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250000,2000000")
    parser.add_argument("--base", type=int, default=50_000)
    parser.add_argument("--per-partition", type=int, default=25_000)
    parser.add_argument("--chunk-size", type=int, default=25_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/churnlens-dask-scale-bench"))
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each engine at the smallest size (alternating; medians)")
    parser.add_argument("--step", choices=["dask", "local", "build", "baseline", "profile"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.step == "build":
        info = build(args.work, args.base, args.size, args.per_partition, plain=args.plain)
        info["largest_partition"]["memory_mb"] = partition_memory_mb(
            args.work / f"parts-{args.size}", info["largest_partition"]["number"])
        print(json.dumps(info))
        return
    if args.step:
        run = {"dask": step_dask, "local": step_local, "baseline": step_baseline,
               "profile": step_profile}[args.step]
        print(json.dumps(run(args.data, args.out, args.bundle, args.chunk_size)))
        return

    sys.path.insert(0, str(ROOT / "bench"))
    from explain_bench import BUNDLE_CACHE, train_bundle

    bundle = args.bundle or train_bundle(BUNDLE_CACHE / "10000-300", customers=10_000,
                                         rounds=300)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {"bundle": str(bundle), "sizes": {}}
    baseline = child("--step", "baseline", "--bundle", str(bundle))
    report["driver_baseline"] = baseline
    print(f"driver baseline (imports, model, LocalCluster; no data): {json.dumps(baseline)}",
          flush=True)
    for size in sizes:
        # built in a child too: this process stays small, so its children's peaks are theirs
        info = child("--step", "build", "--work", str(args.work), "--base", str(args.base),
                     "--size", str(size), "--per-partition", str(args.per_partition),
                     *(["--plain"] if size == sizes[0] else []))
        print(f"dataset {size:,}: {json.dumps(info)}", flush=True)
        if size == sizes[0]:
            profile = child("--step", "profile", "--data", str(args.work / f"parts-{size}"),
                            "--out", str(args.work / "profile-parts"), "--bundle", str(bundle),
                            "--chunk-size", str(args.chunk_size))
            report["worker_profile"] = profile
            print(f"one partition's task, step by step (RSS, peak MB): {json.dumps(profile)}",
                  flush=True)
        common = ["--bundle", str(bundle), "--chunk-size", str(args.chunk_size)]
        dask_out = args.work / f"scores-dask-{size}.parquet"
        local_out = args.work / f"scores-local-{size}.parquet"
        runs: dict[str, list[dict]] = {"dask": [], "local": []}
        repeats = args.repeats if size == sizes[0] else 1
        for _ in range(repeats):
            result = child("--step", "dask", "--data", str(args.work / f"parts-{size}"),
                           "--out", str(dask_out), *common)
            runs["dask"].append(result)
            print(f"score --engine dask, {size:,}: {json.dumps(result)}", flush=True)
            if size != sizes[0]:
                continue
            local = child("--step", "local", "--data", str(args.work / f"plain-{size}"),
                          "--out", str(local_out), *common)
            runs["local"].append(local)
            print(f"score --engine local, {size:,}: {json.dumps(local)}", flush=True)
        entry: dict[str, object] = {"dataset": info, "runs": runs,
                                    "dask": _median_run(runs["dask"])}
        if runs["local"]:
            entry["local"] = _median_run(runs["local"])
            entry["identical"] = identical(dask_out, local_out)
            entry["dask_vs_local"] = round(entry["dask"]["customers_per_s"]
                                           / entry["local"]["customers_per_s"], 2)
            print(f"identical output: {entry['identical']}; dask / local customers/s "
                  f"(medians of {repeats}): {entry['dask_vs_local']}", flush=True)
            local_out.unlink()
        dask_out.unlink()
        report["sizes"][size] = entry
    for size in sizes:
        entry = report["sizes"][size]
        largest = entry["dataset"]["largest_partition"]
        dask = entry["dask"]
        above = dask["worker_peak_rss_mb"] - dask["worker_rest_rss_mb"]
        print(f"{size:,}: worker peak {dask['worker_peak_rss_mb']} MB (partition tasks "
              f"{dask['worker_partition_phase_peak_mb']}, merge "
              f"{dask['worker_merge_phase_peak_mb']}, at rest after the run "
              f"{dask['worker_rest_rss_mb']}) against the largest partition's "
              f"{largest['customers']:,} customers, {largest['parquet_mb']} MB of Parquet, "
              f"{largest.get('memory_mb')} MB in memory; (peak - rest) / memory = "
              f"{above / largest['memory_mb']:.1f}", flush=True)
    peaks = [report["sizes"][s]["dask"]["driver_peak_rss_mb"] for s in sizes]
    report["driver_peak_spread"] = round(max(peaks) / min(peaks) - 1, 3)
    print(f"driver peak RSS {peaks} MB: spread {report['driver_peak_spread']:.1%}", flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
