"""Wide customers files: typing attribute columns all at once against one column at a time.

Writes (once, cached in --data) a customers.csv with --columns attribute columns and
--rows rows: a quarter each of whole numbers, decimals, category words (some with
surrounding spaces) and whole numbers with blank cells. Reads it once, then types its
attribute columns with `features.attributes.type_attributes` (the contract's path) and,
as the reference in the same run, with `features.attributes.attribute_column` applied to
one column at a time and assigned back (the contract's path before this change), checks
that both give identical frames, and prints medians of --repeat alternating runs and
their ratio; then times the whole `validate_table("customers", …)` once.

    nice -n 10 .venv/bin/python bench/wide_attributes_bench.py --columns 1000 --rows 20000
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.attributes import attribute_column, type_attributes
from features.contract import validate_table
from features.io import read_raw_table


def write_customers(path: Path, *, columns: int, rows: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    table: dict[str, object] = {"customer_id": [f"C{i:07d}" for i in range(rows)],
                                "signup_at": ["2024-01-01"] * rows}
    for j in range(columns):
        kind = j % 4
        if kind == 0:
            values = rng.integers(0, 100, rows).astype(str)
        elif kind == 1:
            values = np.round(rng.random(rows) * 100, 2).astype(str)
        elif kind == 2:
            values = rng.choice(["web", "ads", " social", "shop "], rows)
        else:
            values = rng.integers(0, 100, rows).astype(str).astype(object)
            values[rng.random(rows) < 0.1] = ""
        table[f"attribute_{j}"] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table).to_csv(path, index=False)


def one_at_a_time(raw: pd.DataFrame) -> pd.DataFrame:
    """The reference: each attribute column typed on its own and assigned back."""
    frame = raw.reset_index(drop=True)
    for column in frame.columns.drop(["customer_id", "signup_at"]):
        frame[column] = attribute_column(frame[column])
    return frame


def all_at_once(raw: pd.DataFrame) -> pd.DataFrame:
    frame = raw.reset_index(drop=True)
    typed = type_attributes(frame, frame.columns.drop(["customer_id", "signup_at"]))
    return pd.DataFrame({c: typed.get(c, frame[c]) for c in frame.columns}, index=frame.index)


def timed(function, *args) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def compare(label: str, peer, reference, raw: pd.DataFrame, repeat: int) -> None:
    times: dict[str, list[tuple[float, float]]] = {"all at once": [], "one at a time": []}
    results = {}
    for _ in range(repeat):  # alternate, so a busy machine slows both alike
        for name, function in (("all at once", peer), ("one at a time", reference)):
            wall, cpu, results[name] = timed(function, raw)
            times[name].append((wall, cpu))
    pd.testing.assert_frame_equal(results["all at once"], results["one at a time"])
    medians = {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
               for name, t in times.items()}
    for name, (wall, cpu) in medians.items():
        print(f"{label:24s} {name:14s} median wall {wall:7.2f} s  cpu {cpu:7.2f} s")
    ratio = medians["one at a time"][1] / medians["all at once"][1]
    print(f"{label:24s} speed-up (cpu, reference / all at once): {ratio:.1f}x; results identical")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("/tmp/churnlens-wide"))
    args = parser.parse_args()
    path = args.data / f"{args.columns}x{args.rows}" / "customers.csv"
    if not path.exists():
        write_customers(path, columns=args.columns, rows=args.rows)
    raw = read_raw_table(path)
    print(f"{path}: {args.columns:,} attribute columns x {args.rows:,} rows, "
          f"{path.stat().st_size / 1e6:.0f} MB")
    compare("attribute typing", all_at_once, one_at_a_time, raw, args.repeat)

    wall, cpu, _ = timed(lambda frame: validate_table("customers", frame,
                                                     source=str(path), first_row=2), raw)
    print(f"validate_table('customers') with the all-at-once typing: wall {wall:.2f} s, "
          f"cpu {cpu:.2f} s")


if __name__ == "__main__":
    main()
