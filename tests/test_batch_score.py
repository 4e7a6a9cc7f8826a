"""`churnlens score`: accounting, determinism, resume after a crash, rejects, Dask = local."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.batch import chunk_ids, output_paths, partition, run_batch

CUSTOMERS = 360
CHUNK = 100


@pytest.fixture(scope="module")
def data_dir(generated_ecommerce) -> Path:
    return generated_ecommerce(customers=CUSTOMERS, seed=21)


def _run(scorer, data_dir, out, **kwargs):
    options = {"model_uri": "test", "chunk_size": CHUNK, "explain": "all", **kwargs}
    return run_batch(data=data_dir, out=out, scorer=scorer, **options)


@pytest.fixture(scope="module")
def reference_run(scorer, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "scores.parquet"
    return _run(scorer, data_dir, out)


@pytest.mark.slow
def test_command_scores_everyone_and_accounts_for_every_row(bundle_dir, data_dir, tmp_path):
    from churnlens import build_app

    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(build_app(), [
        "score", "--data", str(data_dir), "--out", str(out), "--model", str(bundle_dir),
        "--chunk-size", str(CHUNK), "--explain", "at-risk", "--top-k", "3",
    ], env={"CHURNLENS_NO_PROGRESS": "1"})
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == [
        "customer_id", "as_of", "churn_probability", "risk_tier", "clv", "value_segment",
        "value_at_risk", "reasons_json", "reason_1", "reason_2", "reason_3",
        "recommended_action", "model_version", "lifecycle_stage",
        "expected_saved_value",
    ]
    rejects = pd.read_csv(output_paths(out)[0])
    assert f"rows in {CUSTOMERS:,} = rows scored {len(frame):,} + rows rejected " \
           f"{len(rejects):,}" in result.output
    assert frame["customer_id"].is_monotonic_increasing and frame["customer_id"].is_unique
    explained = frame["reasons_json"] != "[]"
    assert explained.any(), "at-risk customers get reasons"
    assert frame.loc[explained, "risk_tier"].isin(["high", "medium"]).all(), \
        "--explain at-risk explains tiers high and medium only"
    assert frame.loc[explained, "reason_1"].notna().all()
    assert not output_paths(out)[1].exists(), "the work directory is removed after success"


def test_output_is_byte_for_byte_deterministic(scorer, data_dir, tmp_path, reference_run):
    again = _run(scorer, data_dir, tmp_path / "scores.parquet")
    assert again.output.read_bytes() == reference_run.output.read_bytes()
    assert again.rejects.read_bytes() == reference_run.rejects.read_bytes()


def test_resume_after_a_crash_gives_the_uninterrupted_output(
    scorer, data_dir, tmp_path, reference_run
):
    out = tmp_path / "scores.parquet"
    calls = []

    def crash_after_two_chunks(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:  # the initial call, then one per finished chunk
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        _run(scorer, data_dir, out, progress=crash_after_two_chunks)
    assert not out.exists(), "an interrupted run leaves no output file"
    work = output_paths(out)[1]
    assert len(list(work.glob("rows-*.parquet"))) == 2

    seen = []
    resumed = _run(scorer, data_dir, out, resume=True, progress=lambda d, t: seen.append(d))
    assert resumed.chunks_resumed == 2
    assert seen[0] == 2 * CHUNK, "progress starts from the chunks already finished"
    assert out.read_bytes() == reference_run.output.read_bytes()
    assert resumed.rejects.read_bytes() == reference_run.rejects.read_bytes()


def test_resume_refuses_a_run_with_other_settings(scorer, data_dir, tmp_path):
    from serving.batch import BatchError

    out = tmp_path / "scores.parquet"
    with pytest.raises(KeyboardInterrupt):
        _run(scorer, data_dir, out, progress=lambda d, t: (_ for _ in ()).throw(
            KeyboardInterrupt()) if d else None)
    with pytest.raises(BatchError, match="top_k"):
        _run(scorer, data_dir, out, resume=True, top_k=2)


def test_corrupt_rows_are_rejected_and_the_run_goes_on(scorer, data_dir, tmp_path):
    broken = tmp_path / "data"
    broken.mkdir()
    for name in ("customers", "orders", "events"):
        (broken / f"{name}.csv").write_bytes((data_dir / f"{name}.csv").read_bytes())
    orders = pd.read_csv(broken / "orders.csv", dtype=str)
    orders.loc[3, "amount"] = "twelve"
    orders.to_csv(broken / "orders.csv", index=False)
    customers = pd.read_csv(broken / "customers.csv", dtype=str)
    customers.loc[5, "signup_at"] = "not a date"
    customers.to_csv(broken / "customers.csv", index=False)

    summary = _run(scorer, broken, tmp_path / "scores.parquet")
    rejects = pd.read_csv(summary.rejects)
    assert summary.rows_in == CUSTOMERS
    assert summary.rows_in == summary.rows_scored + summary.rows_rejected
    reasons = " | ".join(rejects["reason"].astype(str))
    assert "non-numeric amount" in reasons
    assert "unparseable timestamp in signup_at" in reasons
    assert rejects.loc[rejects["source"] == "orders.csv", "row"].tolist() == [3 + 2]
    scored = pd.read_parquet(summary.output)
    assert customers.loc[5, "customer_id"] not in set(scored["customer_id"])
    assert len(scored) == summary.rows_scored


def test_a_customer_that_cannot_be_scored_is_rejected_alone(
    scorer, data_dir, tmp_path, monkeypatch, reference_run
):
    from serving.scorer import Scorer

    victim = sorted(pd.read_csv(data_dir / "customers.csv", dtype=str)["customer_id"])[150]
    original = Scorer.batch_rows  # what the batch path scores a chunk's features with

    def fragile(self, features, **kwargs):
        if victim in features.index:
            raise ArithmeticError("simulated failure")
        return original(self, features, **kwargs)

    monkeypatch.setattr(Scorer, "batch_rows", fragile)
    summary = _run(scorer, data_dir, tmp_path / "scores.parquet")
    rejects = pd.read_csv(summary.rejects)
    failed = rejects[rejects["reason"].str.contains("simulated failure")]
    assert failed["customer_id"].tolist() == [victim]
    scored = pd.read_parquet(summary.output)
    expected = pd.read_parquet(reference_run.output)
    expected = expected[expected["customer_id"] != victim].reset_index(drop=True)
    pd.testing.assert_frame_equal(scored, expected)
    assert summary.rows_in == summary.rows_scored + summary.rows_rejected


def test_partitions_are_what_for_customers_returns(scorer, data_dir):
    from features.io import read_dataset

    dataset = read_dataset(data_dir).dataset
    chunks = chunk_ids(dataset.customers["customer_id"], 97)
    for chunk, part in zip(chunks, partition(dataset, chunks), strict=True):
        expected = dataset.for_customers(chunk)
        for name in ("customers", "orders", "events"):
            pd.testing.assert_frame_equal(part.table(name), expected.table(name))


@pytest.mark.slow
def test_dask_engine_writes_the_same_file(scorer, data_dir, tmp_path, reference_run):
    summary = _run(scorer, data_dir, tmp_path / "scores.parquet", engine="dask")
    assert summary.output.read_bytes() == reference_run.output.read_bytes()
    assert summary.rejects.read_bytes() == reference_run.rejects.read_bytes()


@pytest.mark.slow
def test_worker_processes_write_the_same_file_and_resume(
    scorer, data_dir, tmp_path, reference_run
):
    summary = _run(scorer, data_dir, tmp_path / "scores.parquet", workers=2)
    assert summary.output.read_bytes() == reference_run.output.read_bytes()
    assert summary.rejects.read_bytes() == reference_run.rejects.read_bytes()

    out = tmp_path / "interrupted.parquet"
    calls = []

    def crash_after_one_chunk(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        _run(scorer, data_dir, out, workers=2, progress=crash_after_one_chunk)
    assert not out.exists()
    resumed = _run(scorer, data_dir, out, workers=2, resume=True)
    assert resumed.chunks_resumed >= 1, "finished chunks are kept"
    assert out.read_bytes() == reference_run.output.read_bytes()


def test_outreach_writes_scores_and_actions_to_the_outbox(scorer, data_dir, tmp_path):
    from serving.outreach.outbox import Outbox

    outbox = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    try:
        summary = _run(scorer, data_dir, tmp_path / "scores.parquet", outbox=outbox,
                       explain="none")
        scored = pd.read_parquet(summary.output)
        assert summary.outreach["scores"] == len(scored)
        recommended = set(scored.loc[scored["recommended_action"].notna(), "customer_id"])
        history = outbox.action_history()
        treated = history[history["assignment"] == "treated"]
        # held-out customers get an action row but no recommendation from its rule
        assert len(treated) > 0 and set(treated["customer_id"]) <= recommended
        assert len(history) == summary.outreach["actions"]
        counts = outbox.action_summary()
        assert int(counts["count"].sum()) == summary.outreach["actions"]
    finally:
        outbox.close()


def test_bad_arguments_stop_with_a_clear_message(bundle_dir, data_dir, tmp_path):
    from churnlens import build_app

    runner = CliRunner()
    base = ["score", "--data", str(data_dir), "--model", str(bundle_dir)]
    wrong_suffix = runner.invoke(build_app(), [*base, "--out", str(tmp_path / "scores.txt")],
                                 env={"CHURNLENS_NO_PROGRESS": "1"})
    assert wrong_suffix.exit_code == 2
    assert "must end in .parquet or .csv" in wrong_suffix.output
    empty = tmp_path / "empty"
    empty.mkdir()
    no_tables = runner.invoke(build_app(), ["score", "--data", str(empty), "--model",
                                            str(bundle_dir), "--out", str(tmp_path / "s.csv")],
                              env={"CHURNLENS_NO_PROGRESS": "1"})
    assert no_tables.exit_code == 2
    assert "customers" in no_tables.output


def test_a_run_on_files_never_imports_sqlalchemy(bundle_dir, data_dir, tmp_path):
    """SQLAlchemy is for database sources; importing it cost a run on files ~0.7 s of CPU
    before the first table was read (the batch bench's 100k run took ~9 s)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from models.loading import load_model\n"
        "from serving.batch import run_batch\n"
        "from serving.outreach.rules import load_rules\n"
        "from serving.scorer import Scorer\n"
        f"scorer = Scorer(load_model({str(bundle_dir)!r}), rules=load_rules(None))\n"
        f"run_batch(data={str(data_dir)!r}, out={str(tmp_path / 'scores.parquet')!r},\n"
        f"          scorer=scorer, model_uri='test', chunk_size={CHUNK}, explain='none')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", \
        "a batch run on a dataset directory should not import SQLAlchemy"


def test_a_worker_loads_the_model_without_scikit_learn(scorer, tmp_path):
    """LightGBM imports scikit-learn only for its estimators; a scoring worker skips it
    (~1 s of CPU and ~70 MB each). The workers' output equals one process's (test above)."""
    import pickle
    import subprocess
    import sys

    pickled = tmp_path / "scorer.pickle"
    pickled.write_bytes(pickle.dumps(scorer))
    script = (
        "import os, sys\n"
        "import serving.batch as batch\n"
        f"batch._start_worker(open({str(pickled)!r}, 'rb').read(), os.getppid())\n"
        "print(batch._WORKER_SCORER.bundle.churn_booster.num_trees() > 0,\n"
        "      'lightgbm' in sys.modules, sys.modules.get('sklearn') is None)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"], \
        "a worker should hold the model, with LightGBM loaded and scikit-learn not"
