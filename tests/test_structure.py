"""Package structure: no import cycles inside the subpackages, and every list of task and ICL
mode names derived from its one registry (`kgc.tasks.TASK_NAMES`, `kgc.icl.MODES`)."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

KGC = Path(__file__).resolve().parent.parent / "kgc"


# ---------------------------------------------------------------- import cycles
def _module_name(f: Path) -> str:
    parts = f.relative_to(KGC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            name = getattr(t, "id", None) or getattr(t, "attr", None)
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    skip.update(id(n) for n in ast.walk(sub))
    return skip


def import_graph(package: Path) -> dict[str, set[str]]:
    """module → the modules of `package` it imports, anywhere in the file (module level and
    inside functions), except under `if TYPE_CHECKING:`. `from pkg import x` imports pkg.x
    when that is a module, else pkg."""
    files = {_module_name(f): f for f in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, f in files.items():
        tree = ast.parse(f.read_text(encoding="utf-8"), str(f))
        skip = _type_checking_nodes(tree)
        out: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    out.add(sub if sub in files else base)
        graph[mod] = {m for m in out if m in files and m != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_imports_inside_functions():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["graph", "icl", "tasks"])
def test_no_import_cycles(package):
    graph = import_graph(KGC / package)
    assert len(graph) > 3
    assert cycles(graph) == []


# ---------------------------------------------------------------- task names
def test_task_names_come_from_the_registry():
    from kgc import cli, config, tasks
    from kgc.graph import build

    assert tasks.names() == list(tasks.TASK_NAMES)
    assert typing.get_args(tasks.TaskName) == tasks.TASK_NAMES
    for name in tasks.TASK_NAMES:  # each built-in class registers under its listed name
        assert tasks.get(name).name == name
        assert type(tasks.get(name)).__module__.startswith("kgc.tasks.")
    assert typing.get_args(config.EvalConfig.model_fields["task"].annotation) == tasks.TASK_NAMES
    assert [cli._task(n.lower()) for n in tasks.TASK_NAMES] == list(tasks.TASK_NAMES)
    assert set(build._HANDLERS) == set(tasks.TASK_NAMES)  # the graph reads every task


def test_serving_accepts_the_registry_task_names():
    from kgc import serving, tasks

    task = serving.ExtractRequest.model_fields["task"].annotation
    assert typing.get_args(task) == tasks.TASK_NAMES


def test_task_names_load_no_task_module():
    code = (
        "import sys, json\n"
        "import kgc.config, kgc.cli\n"
        "from kgc.tasks import TASK_NAMES, TaskName\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kgc.tasks.') "
        "and m != 'kgc.tasks.registry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# ---------------------------------------------------------------- ICL modes
def test_icl_modes_come_from_one_list():
    from kgc.icl import MODES, modes
    from kgc.icl.config import IclConfig

    assert typing.get_args(IclConfig.model_fields["mode"].annotation) == MODES
    assert tuple(modes.MODULES) == MODES
    for m in MODES:  # each mode: its module with plan(), and its config section
        assert callable(importlib.import_module(modes.MODULES[m]).plan)
        assert m in IclConfig.model_fields


def test_icl_config_rejects_another_modes_section():
    from kgc.errors import KgcError
    from kgc.icl import MODES
    from kgc.icl.config import load_icl_config

    for mode in MODES:
        other = next(m for m in MODES if m != mode)
        with pytest.raises(KgcError, match=f"section.*{other}.*mode is '{mode}'"):
            load_icl_config(None, data={"mode": mode, other: {}})


# ---------------------------------------------------------------- layers (.importlinter)
LAYER_PACKAGES = {
    "cli",
    "__main__",
    "review_app",
    "runtime",
    "modeling",
}  # entry, runtime, modeling


def _contract(name: str):
    import configparser

    cp = configparser.ConfigParser()
    cp.read(KGC.parent / ".importlinter", encoding="utf-8")
    return cp[f"importlinter:contract:{name}"]


def test_the_core_contract_names_every_core_module():
    """A new module of kgc is in the core contract's list (or in a layer package), so no
    module escapes the rule that the core imports no torch, Ray or model code."""
    listed = {m.removeprefix("kgc.") for m in _contract("core")["source_modules"].split()}
    present = {
        p.stem if p.suffix == ".py" else p.name
        for p in KGC.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert listed == present - LAYER_PACKAGES


def test_import_contracts_hold_and_catch_a_wrong_import(tmp_path):
    """`lint-imports` keeps every contract on the tree, and breaks on a copy of it where a core
    module imports torch and a modeling module imports ray."""
    import shutil

    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (it is in the dev extra)")
    run = dict(capture_output=True, text=True, timeout=120)
    ok = subprocess.run([str(exe)], cwd=KGC.parent, **run)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 broken" in ok.stdout
    shutil.copytree(KGC, tmp_path / "kgc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(KGC.parent / ".importlinter", tmp_path)
    with open(tmp_path / "kgc" / "rows.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _wrong():\n    import torch  # noqa\n")
    with open(tmp_path / "kgc" / "modeling" / "data.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _wrong():\n    import ray  # noqa\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    bad = subprocess.run([str(exe)], cwd=tmp_path, env=env, **run)
    assert bad.returncode != 0
    assert "kgc.rows is not allowed to import torch" in bad.stdout
    assert "Illegal imports of protected package ray" in bad.stdout
