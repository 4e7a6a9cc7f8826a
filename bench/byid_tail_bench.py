"""Where the by-id latency tail comes from, measured in one process: full garbage collections
and OpenMP's thread start-up for one row.

Run from the repository root after `bench/serving_bench.py` has trained its work directory:

    .venv/bin/python bench/byid_tail_bench.py --workdir /tmp/clbench100k

The served model and its 100k-customer dataset are loaded as `churnlens serve` loads them
(the server's modules imported, the dataset's features prepared once by the bundle), then:

1. by-id scores with top-5 reasons for random customers, in alternating rounds with the
   collector as it is (``default``) and after `serving.model_holder.freeze_long_lived`
   (``frozen``); each full (generation-2) collection is timed through ``gc.callbacks``;
2. one row through each booster with LightGBM's default threads and with ``num_threads=1``,
   interleaved.

Wall-clock figures depend on the machine's load (printed); the ratios are within one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import time
from pathlib import Path


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "p999_ms": at(0.999),
            "max_ms": ordered[-1] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/clbench100k"))
    parser.add_argument("--requests", type=int, default=10_000, help="per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each collector mode")
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{args.workdir.resolve() / 'mlflow.db'}"

    import serving.app  # noqa: F401  (the server's modules: what a full collection walks)
    from features.io import read_dataset
    from models.loading import load_model
    from serving.model_holder import freeze_long_lived
    from serving.scorer import Scorer

    loaded = load_model("models:/churnlens@champion")
    scorer = Scorer(loaded)
    dataset = read_dataset(str(args.workdir / "data")).dataset
    as_of = dataset.default_as_of()
    prepared = scorer.prepare(scorer.features(dataset, as_of=as_of))
    del dataset
    rng = random.Random(7)
    ids = list(prepared.positions)

    pauses: list[float] = []
    started = [0.0]

    def timer(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(timer)
    figures: dict[str, dict[str, list[float]]] = {
        mode: {"latency": [], "pauses": []} for mode in ("default", "frozen")}
    for i in range(args.rounds * 2):
        mode = ("default", "frozen")[i % 2]
        if mode == "frozen":
            freeze_long_lived()
        else:
            gc.unfreeze()
        pauses.clear()
        latencies = []
        for _ in range(args.requests):
            position = prepared.positions[rng.choice(ids)]
            begun = time.perf_counter()
            scorer.score_rows(prepared, [position], as_of=as_of, explain="all", top_k=5)
            latencies.append(time.perf_counter() - begun)
        figures[mode]["latency"] += latencies
        figures[mode]["pauses"] += pauses
    gc.callbacks.remove(timer)
    gc.unfreeze()

    bundle = loaded.bundle
    rows = [prepared.matrix[i : i + 1] for i in rng.sample(range(len(prepared)), 2000)]
    threads: dict[str, list[float]] = {"default": [], "one": []}
    for row in rows:
        for name, kwargs in (("default", {}), ("one", {"num_threads": 1})):
            begun = time.perf_counter()
            bundle.churn_booster.predict(row, **kwargs)
            if bundle.clv_booster is not None:
                bundle.clv_booster.predict(row, **kwargs)
            threads[name].append(time.perf_counter() - begun)

    report = {
        "customers": len(prepared), "requests": args.requests * args.rounds,
        "frozen_objects": None, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
        "by_id": {mode: {**quantiles(f["latency"]), "full_collections": len(f["pauses"]),
                         "full_collection_median_ms": statistics.median(f["pauses"]) * 1e3
                         if f["pauses"] else 0.0,
                         "full_collection_max_ms": max(f["pauses"], default=0.0) * 1e3}
                  for mode, f in figures.items()},
        "one_row_predict": {name: quantiles(values) for name, values in threads.items()},
    }
    freeze_long_lived()
    report["frozen_objects"] = gc.get_freeze_count()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
