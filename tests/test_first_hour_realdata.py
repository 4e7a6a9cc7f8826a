"""A new user without ../shared/data: the real datasets say where to get them, and the
files as downloaded from their public sources load."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from training.realdata import SOURCES, load_cdnow, load_source

#: CDNOW_master.txt as Bruce Hardie's site ships it: no header, whitespace-separated
HARDIE_LINES = ["00001 19970101  1   11.77", "00002 19970112  1   12.00",
                "00002 19970112  5   77.00", "00003 19970102  2   20.76",
                "00003 19970330  2   20.76"]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_hardies_master_file_without_header_loads_like_the_one_with(tmp_path):
    plain = load_cdnow(_write(tmp_path / "CDNOW_master.txt", HARDIE_LINES))
    headed = load_cdnow(_write(tmp_path / "headed.txt",
                               [" customer_id  date number_of_cds  dollar_value",
                                *HARDIE_LINES]))
    assert plain.name == headed.name == "cdnow"
    pd.testing.assert_frame_equal(plain.dataset.orders, headed.dataset.orders)
    assert plain.counts == {"rows": 5, "customers": 3, "orders": 5}


def test_the_download_name_is_found_in_the_data_folder(tmp_path):
    _write(tmp_path / "CDNOW_master.txt", HARDIE_LINES)
    assert load_source("cdnow", data_dir=tmp_path).counts["customers"] == 3


@pytest.mark.parametrize(("name", "where"), [
    ("cdnow", "brucehardie.com/datasets"),
    ("cdnow-sample", "brucehardie.com/datasets"),
    ("online-retail", "archive.ics.uci.edu/dataset/352"),
])
def test_a_missing_file_names_its_public_source_and_where_to_put_it(tmp_path, name, where):
    with pytest.raises(FileNotFoundError) as raised:
        load_source(name, data_dir=tmp_path)
    message = str(raised.value)
    assert where in message and where in SOURCES[name]
    assert f"save it as {tmp_path}" in message and f"--data {name}:PATH" in message


def test_backtest_says_it_in_one_line(tmp_path):
    from churnlens import build_app

    result = CliRunner().invoke(build_app(), ["backtest", "--data", "cdnow",
                                              "--real-data-dir", str(tmp_path)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "brucehardie.com/datasets" in lines[0], result.output
