"""The README's and docs/serving.md's examples, run as printed against a demo folder.

Every fenced shell block of those pages is run line by line in one session per
page, the way a user copies them: ``export`` sets the session's environment,
``cd`` moves it, `churnlens` and `mlflow` lines run the installed commands (a
server — ``serve``, ``mlflow ui`` — starts on 127.0.0.1 on a free port and must
answer before the next line), and ``curl`` lines go through an HTTP client to
that server. ``$KEY`` and ``<digest>`` are what the page's ``churnlens apikey
new`` printed. A JSON block right after a block with a ``curl`` line is that
request's documented answer: the real answer must have its shape (the same
keys, values of the same JSON types; ``null`` where the page shows a value is
accepted for nullable fields) and its timestamps the same format. Other JSON
blocks must parse.

A block whose first line is ``# needs: …`` needs what a new user may lack (a
file to download, Docker, a benchmark tool); it is skipped with that reason. A
line the session does not know how to run fails the test, so a new kind of
example cannot slip in untested.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

#: the first test to ask for the demo pays for it (a few minutes on a busy machine)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[1]
#: the commands installed beside the interpreter running the tests
VENV_BIN = Path(sys.executable).parent
PAGES = {"README.md": "churnlens-demo", "docs/serving.md": "."}
#: lines not run here, and why (each is run elsewhere in the suite)
NOT_RUN = {
    "make demo": "the demo fixture runs `churnlens demo`, which is what `make demo` runs",
    "make test": "this is the test suite itself",
}
SERVERS = {("churnlens", "serve"): "/readyz", ("mlflow", "ui"): "/"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


@dataclass
class Block:
    """One fenced block of a page."""

    page: str
    line: int  # of the first line inside the fence
    end: int  # of the closing fence
    language: str
    text: str
    answer: Block | None = None  # the JSON block documented as this block's response

    @property
    def needs(self) -> str | None:
        first = next((line.strip() for line in self.text.splitlines() if line.strip()), "")
        return first[len("# needs:"):].strip() if first.startswith("# needs:") else None


def blocks(page: str) -> list[Block]:
    """The page's fenced blocks, each JSON block paired with the shell block before it
    when only blank lines separate them."""
    found: list[Block] = []
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        indent, language, start = len(opening.group(1)), opening.group(2), i + 1
        i += 1
        while not re.match(r"^\s*```\s*$", lines[i]):
            i += 1
        text = "\n".join(line[indent:] for line in lines[start:i])
        block = Block(page, start, i, language, text)
        previous = found[-1] if found else None
        if (language == "json" and previous is not None and previous.language == "bash"
                and all(not line.strip() for line in lines[previous.end + 1:start - 1])):
            previous.answer = block
        found.append(block)
        i += 1
    return found


def commands(text: str) -> list[str]:
    """Shell commands: continuation lines and quoted text over several lines joined,
    comments and blank lines dropped."""
    joined, current = [], ""
    for line in text.splitlines():
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        try:
            words = shlex.split(current, comments=True)
        except ValueError:  # a quote still open: the command goes on
            current += "\n"
            continue
        if words:
            joined.append(current.strip())
        current = ""
    assert not current.strip(), f"unfinished shell line: {current!r}"
    return joined


def shape(value: Any) -> Any:
    """The JSON type tree of a value (first element for lists)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        match = TIMESTAMP.match(value)
        if match is None:
            return "string"
        return f"timestamp ending {match.group(2)}" if match.group(2) else "naive timestamp"
    return "null"


def assert_same_shape(documented: Any, actual: Any, where: str) -> None:
    if documented == "null" or actual == "null":
        return  # a nullable field: the page shows one case
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{where}: documented an object, got {actual}"
        assert set(documented) == set(actual), (
            f"{where}: documented keys {sorted(documented)}, answered {sorted(actual)}")
        for key in documented:
            assert_same_shape(documented[key], actual[key], f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{where}: documented a list, got {actual}"
        if documented and actual:
            assert_same_shape(documented[0], actual[0], f"{where}[0]")
    else:
        assert documented == actual, f"{where}: documented a {documented}, answered {actual}"


@dataclass
class Session:
    """One page's shell: its environment, folder, servers, and what apikey printed."""

    cwd: Path
    logs: Path
    stack: ExitStack
    # the conftest fixtures: a server answering, polling until a condition holds, a free
    # port, a shell line in its own process group
    wait_for: Callable[..., httpx.Response]
    eventually: Callable[..., Any]
    free_port: Callable[[], int]
    background: Callable[..., Any]
    env: dict[str, str] = field(default_factory=lambda: {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHURNLENS_", "MLFLOW_"))},
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "CHURNLENS_NO_PROGRESS": "1"})
    ports: dict[int, int] = field(default_factory=dict)  # documented port -> real port
    key: str = ""
    digest: str = ""
    ran: list[str] = field(default_factory=list)

    def expand(self, word: str) -> str:
        word = word.replace("<digest>", self.digest).replace("$KEY", self.key)
        for documented, real in self.ports.items():
            word = word.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{real}")
        return word

    def run(self, line: str, *, where: str) -> httpx.Response | None:
        words = [self.expand(word) for word in shlex.split(line, comments=True)]
        if not words:
            return None
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            self.env[name] = value
            return None
        if words[0] == "cd":
            self.cwd = (self.cwd / words[1]).resolve()
            return None
        if words[0] == "curl":
            return self.curl(words[1:], where=where)
        if words[0] in ("churnlens", "mlflow"):
            self.command(words, where=where)
            return None
        raise AssertionError(f"{where}: the docs test does not know how to run {line!r}; "
                             "mark the block with '# needs: …' if a user may lack it")

    def command(self, words: list[str], *, where: str) -> None:
        probe = SERVERS.get((words[0], words[1]))
        if probe is not None:
            self.serve(words, probe=probe, where=where)
            return
        done = subprocess.run([str(VENV_BIN / words[0]), *words[1:]], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{where}: {' '.join(words)} failed:\n" \
                                     f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        if words[:3] == ["churnlens", "apikey", "new"]:
            self.key = re.search(r"key:\s+(\S+)", done.stdout).group(1)
            self.digest = re.search(r"digest:\s+(\S+)", done.stdout).group(1)
        self.ran.append(" ".join(words))

    def serve(self, words: list[str], *, probe: str, where: str) -> None:
        """Start a documented server on 127.0.0.1 and a free port; wait until it answers."""
        words = list(words)
        if "--host" in words:
            words[words.index("--host") + 1] = "127.0.0.1"
        documented = int(words[words.index("--port") + 1]) if "--port" in words else 8000
        real = self.free_port()
        if "--port" in words:
            words[words.index("--port") + 1] = str(real)
        else:
            words += ["--port", str(real)]
        self.ports[documented] = real
        log = self.logs / f"{words[0]}-{real}.log"
        line = " ".join(shlex.quote(w) for w in [str(VENV_BIN / words[0]), *words[1:]])
        process = self.stack.enter_context(self.background(line, cwd=self.cwd, env=self.env,
                                                      log=log))
        try:
            self.wait_for(f"http://127.0.0.1:{real}{probe}", timeout=300, alive=process)
        except AssertionError as error:
            raise AssertionError(f"{where}: {error}\n{log.read_text()[-3000:]}") from None
        self.ran.append(" ".join(words))

    def curl(self, words: list[str], *, where: str) -> httpx.Response:
        headers: dict[str, str] = {}
        data: str | None = None
        method, url = None, None
        iterator = iter(words)
        for word in iterator:
            if word in ("-H", "--header"):
                name, _, value = next(iterator).partition(":")
                headers[name.strip()] = value.strip()
            elif word in ("-d", "--data"):
                data = next(iterator)
            elif word in ("-X", "--request"):
                method = next(iterator)
            elif word in ("-s", "--silent"):
                continue
            elif word.startswith("-"):
                raise AssertionError(f"{where}: curl option {word} is not handled here")
            else:
                url = word
        assert url is not None, f"{where}: curl without a URL"
        method = method or ("POST" if data is not None else "GET")
        last: list[httpx.Response] = []

        def answered() -> httpx.Response | None:
            last[:] = [httpx.request(method, url, headers=headers, content=data, timeout=120)]
            # with --workers N each worker loads on its own: 503 until this one is ready
            return last[0] if last[0].status_code != 503 else None

        try:
            response = self.eventually(answered, timeout=300, what=f"{where}: {url} ready")
        except AssertionError:
            response = last[0]  # still 503: the assertion below shows its answer
        assert response.is_success, (
            f"{where}: {method} {url} answered {response.status_code}: {response.text[:500]}")
        self.ran.append(f"curl {method} {url}")
        return response


def _examples(page: str) -> list[Block]:
    return [block for block in blocks(page) if block.language in ("bash", "sh", "shell")]


@pytest.fixture(scope="module")
def home(demo_run, tmp_path_factory) -> Path:
    """A folder holding the demo's folder under the name the docs use."""
    folder = tmp_path_factory.mktemp("docs-home")
    (folder / "churnlens-demo").symlink_to(demo_run.folder, target_is_directory=True)
    return folder


@pytest.mark.parametrize("page", list(PAGES))
def test_every_example_of_the_page_runs_as_printed(page, home, tmp_path, wait_for, eventually,
                                                  free_port, background):
    session_logs = tmp_path / "logs"
    session_logs.mkdir()
    skipped: list[str] = []
    with ExitStack() as stack:
        session = Session(cwd=(home / PAGES[page]).resolve(), logs=session_logs, stack=stack,
                          wait_for=wait_for, eventually=eventually, free_port=free_port,
                          background=background)
        for block in _examples(page):
            where = f"{page} line {block.line}"
            if block.needs is not None:
                skipped.append(f"{where}: needs {block.needs}")
                continue
            answered = None
            for line in commands(block.text):
                plain = " ".join(shlex.split(line, comments=True))
                if plain in NOT_RUN:
                    skipped.append(f"{where}: {plain}: {NOT_RUN[plain]}")
                    continue
                answered = session.run(line, where=where) or answered
            if block.answer is not None:
                assert answered is not None, f"{where}: a documented answer, but no request"
                documented = json.loads(block.answer.text)
                assert_same_shape(shape(documented), shape(answered.json()),
                                  f"{page} line {block.answer.line}")
    assert session.ran, f"{page}: no example ran ({skipped})"
    print(f"{page}: ran {len(session.ran)} lines; not run: {skipped}")


@pytest.mark.parametrize("page", list(PAGES))
def test_every_json_block_parses(page):
    for block in blocks(page):
        if block.language == "json":
            json.loads(block.text)
