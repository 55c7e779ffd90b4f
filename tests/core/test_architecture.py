"""The structure docs/ARCHITECTURE.md describes, checked: imports go one way, no cycles, short functions.

The import graph is read from the source with ``ast`` (function-local imports included), so an
import that goes against the documented direction fails here before it can hide as a cycle.
"""

import ast
import collections
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "alexnet"

# docs/ARCHITECTURE.md, "The layers and what each may import": a folder may import only lower ranks.
RANKS = {
    "alexnet": 0, "errors": 0,  # the package root holds only __version__
    "atomic": 1, "runtime": 1,  # core: the one atomic write; device, precision, layout and process settings
    "jobs": 1.5,  # core too: a job's lock and state record, written with atomic
    "models": 2, "data": 2,
    "checkpoint": 3,
    "inference": 4,
    "training": 5,
    "reporting": 6,
    "tools": 7,
    "cli": 8, "__main__": 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                targets = [target] + [f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}")]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t.split(".")[0] == "alexnet" and t != name)
    return graph


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "alexnet"


def test_every_part_has_a_documented_rank():
    parts = {part(m) for m in import_graph()}
    assert parts <= set(RANKS), sorted(parts - set(RANKS))
    doc = (SRC.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for name in RANKS:
        if name not in ("alexnet", "__main__"):
            assert f"`{name}" in doc, f"docs/ARCHITECTURE.md does not name {name}"


def test_imports_go_one_way():
    wrong = sorted(f"{a} imports {b}" for a, targets in import_graph().items() for b in targets
                   if part(a) != part(b) and RANKS[part(b)] >= RANKS[part(a)])
    assert not wrong, "imports against docs/ARCHITECTURE.md's direction:\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph, state, cycles = import_graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" → ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, cycles


def test_the_checker_would_catch_a_backward_import(tmp_path, monkeypatch):
    """The rule is not vacuous: a models module importing the training loop is reported."""
    graph = import_graph()
    graph["alexnet.models.alexnet"].add("alexnet.training.loop")
    monkeypatch.setattr(sys.modules[__name__], "import_graph", lambda: graph)
    with pytest.raises(AssertionError, match="alexnet.models.alexnet imports alexnet.training.loop"):
        test_imports_go_one_way()


def test_every_function_fits_on_a_screen():
    """No function in src is over 50 lines (docs/ARCHITECTURE.md): a longer one does several jobs."""
    long = [f"{path.relative_to(SRC)}:{n.lineno} {n.name}: {n.end_lineno - n.lineno + 1} lines"
            for path in sorted(PACKAGE.rglob("*.py")) for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 50]
    assert not long, long


def test_the_cli_and_a_training_run_import_neither_torchvision_nor_scikit_learn(tmp_path, cli_env):
    """Their imports (torch._dynamo and sympy; scikit-learn) cost about 1 s and 0.7 s in every command
    (`alexnet --help` took 3.1 s, now 1.8 s): versions and the digits are read without them."""
    import subprocess

    code = ("import sys, runpy; sys.argv = ['alexnet', 'train', '--preset', 'digits', '--epochs', '1', '--device', 'cpu', "
            f"'--quiet', '--out', {str(tmp_path / 'run')!r}, '--set', 'model.options.width=0.25', '--set', 'max_steps=1']\n"
            "try:\n    runpy.run_module('alexnet', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('torchvision', 'sklearn') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
    report = __import__("json").loads((tmp_path / "run" / "report.json").read_text())
    import torchvision

    assert report["versions"]["torchvision"] == torchvision.__version__  # read from its version.py, local label kept


def test_torchvision_version_without_importing_it(monkeypatch):
    import torchvision

    from alexnet import checkpoint

    monkeypatch.delitem(sys.modules, "torchvision")
    assert checkpoint.torchvision_version() == torchvision.__version__ and "torchvision" not in sys.modules
