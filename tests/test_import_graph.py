"""The project's modules import each other without a cycle (`.ci/import_graph.py`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / ".ci" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_project_has_no_import_cycle():
    checker = _checker()
    graph = checker.import_graph(ROOT)
    assert "training.fit" in graph and "features.snapshots" in graph["training.fit"]
    assert checker.cycles(graph) == [], "modules import each other in a cycle"


def test_training_arrows_point_one_way():
    graph = _checker().import_graph(ROOT)
    assert "training.run" not in graph["training.fit"]
    assert not any(t.startswith(("training.", "serving.")) for t in graph["models.bundle"])


def test_a_cycle_hidden_in_a_function_is_found(tmp_path):
    package = tmp_path / "training"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from training.b import thing\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from training.c import other\n"
        "def thing():\n    from training import a\n    return a\n")
    (package / "c.py").write_text("from training.a import x\n")
    checker = _checker()
    graph = checker.import_graph(tmp_path)
    assert checker.cycles(graph) == [["training.a", "training.b"]], (
        "the import inside a function closes a cycle; the TYPE_CHECKING one does not")
    assert checker.main(["--root", str(tmp_path)]) == 1


def test_the_layers_import_downwards_only(tmp_path):
    checker = _checker()
    assert checker.wrong_way(checker.import_graph(ROOT)) == []
    for package, body in (("features", "def replay():\n    from serving import outbox\n"),
                          ("serving", "from features import history\n")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "x.py").write_text(body)
    (tmp_path / "serving" / "outbox.py").write_text("")
    (tmp_path / "features" / "history.py").write_text("")
    graph = checker.import_graph(tmp_path)
    assert checker.wrong_way(graph) == [("features.x", "serving.outbox")], (
        "features importing serving is wrong-way, even inside a function; serving "
        "importing features is not")
    assert checker.main(["--root", str(tmp_path)]) == 1
