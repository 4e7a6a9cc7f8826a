"""Batch commands read a database as they read a directory: same features, scores, report.

SQLite always; PostgreSQL when CHURNLENS_TEST_POSTGRES_URL is set (a schema per test).
"""

from __future__ import annotations

import pandas as pd
import pytest

CUSTOMERS = 200


@pytest.fixture(scope="module")
def data_dir(generated_ecommerce):
    return generated_ecommerce(customers=CUSTOMERS, seed=31)


@pytest.fixture
def url(backend, tmp_path, data_dir, run_cli, scratch_database):
    """A database loaded from ``data_dir`` with `churnlens load`."""
    with scratch_database(backend, tmp_path, prefix="source") as found:
        loaded = run_cli("load", "--data", str(data_dir), "--into", found)
        assert loaded.exit_code == 0, loaded.output
        yield found


def _run(run_cli, *args: str) -> None:
    result = run_cli(*args)
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_score_from_the_database_equals_score_from_the_files(url, data_dir, bundle_dir,
                                                            tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("CHURNLENS_NO_PROGRESS", "1")
    common = ["--model", str(bundle_dir), "--workers", "1", "--as-of", "2026-05-01"]
    _run(run_cli, "score", "--data", str(data_dir), "--out", str(tmp_path / "files.parquet"),
         *common)
    _run(run_cli, "score", "--data", url, "--out", str(tmp_path / "db.parquet"), *common)
    from_files = pd.read_parquet(tmp_path / "files.parquet")
    from_db = pd.read_parquet(tmp_path / "db.parquet")
    assert len(from_db) > CUSTOMERS // 2
    pd.testing.assert_frame_equal(from_db, from_files, obj="scores from the database")


def test_features_from_the_database_equal_features_from_the_files(url, data_dir, tmp_path, run_cli):
    _run(run_cli, "features", "--data", str(data_dir), "--out", str(tmp_path / "files.parquet"))
    _run(run_cli, "features", "--data", url, "--out", str(tmp_path / "db.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "db.parquet"),
                                  pd.read_parquet(tmp_path / "files.parquet"),
                                  obj="features from the database")


def test_report_and_validate_read_the_database(url, tmp_path, run_cli):
    report = tmp_path / "report.html"
    result = run_cli("report", "--data", url, "--no-model", "--out", str(report))
    assert result.exit_code == 0, result.output
    assert report.stat().st_size > 0
    validated = run_cli("validate", "--data", url)
    assert validated.exit_code == 0 and "every row is usable" in validated.output


def test_tables_mapping_needs_a_database(data_dir, tmp_path, run_cli):
    mapping = tmp_path / "tables.yaml"
    mapping.write_text("customers: customers\n")
    result = run_cli("validate", "--data", str(data_dir), "--tables", str(mapping))
    assert result.exit_code == 2
    assert "a table mapping needs a database URL" in result.output


def test_an_unreachable_database_is_one_line(tmp_path, run_cli):
    result = run_cli("validate", "--data", "postgresql+psycopg://nobody:secret@127.0.0.1:1/x")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot be read" in lines[0], result.output
    assert "secret" not in result.output, "the password is never printed"
