"""The project's own files: Dockerfile inputs, console script, CI entry point."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from churnlens import build_app

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED_COMMANDS = {"demo", "generate", "validate", "features", "train", "backtest", "promote",
                       "score", "serve", "outreach", "report", "apikey"}


def test_every_file_the_dockerfile_copies_exists():
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        match = re.match(r"^COPY\s+(?!--from)(.+)\s+\S+$", line.strip())
        if match:
            sources.extend(match.group(1).split())
    assert sources, "the Dockerfile should copy the project into the image"
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"Dockerfile copies files that do not exist: {missing}"


def test_dockerfile_runs_as_non_root_and_starts_the_server():
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert '"serve"' in text, "the image should start `churnlens serve`"


@pytest.mark.skipif(shutil.which("hadolint") is None and not (ROOT / ".venv/bin/hadolint").exists(),
                    reason="hadolint is installed by the dev extra")
def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv/bin/hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_console_script_offers_every_design_command():
    result = CliRunner().invoke(build_app(), ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    listed = set(re.findall(r"│ (\w+)\s", result.output))
    missing = sorted(DOCUMENTED_COMMANDS - listed)
    assert not missing, f"missing commands: {missing}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in readme.split("\n## ")[0], "the README starts with the test command"
    assert re.search(r"^make test$", ci, flags=re.MULTILINE), ".ci/run must run `make test`"
