"""The suite's tiers: every test that starts a fresh interpreter, a launcher or a browser carries the `slow` mark, so
`pytest -m "not slow"` is quick and stays in-process (forked workers, a multiprocessing pool or DataLoader workers,
start in milliseconds and do not count). Read from the test files' syntax trees, not by running them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: subprocess's functions that start a process.
SUBPROCESS_STARTERS = {"run", "Popen", "call", "check_call", "check_output"}
#: Other calls that start a process or a browser.
OTHER_STARTERS = {"sync_playwright", "async_playwright"}


def process_starters(tree: ast.Module) -> tuple[set[str], set[str]]:
    """The names under which `tree` reaches subprocess (the module's aliases) and its starters (imported by name)."""
    modules, functions = {"subprocess"}, set(OTHER_STARTERS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.asname or alias.name for alias in node.names if alias.name == "subprocess"}
        elif isinstance(node, ast.ImportFrom) and node.module == "subprocess":
            functions |= {
                alias.asname or alias.name for alias in node.names if alias.name in SUBPROCESS_STARTERS
            }
    return modules, functions


def starts_a_process(node: ast.AST, helpers: set[str], starters: tuple[set[str], set[str]]) -> bool:
    """Whether `node` calls subprocess, Playwright, or one of the module's own helpers that does."""
    modules, functions = starters
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        function = call.func
        if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
            if function.value.id in modules and function.attr in SUBPROCESS_STARTERS:
                return True
        if isinstance(function, ast.Name) and (function.id in helpers or function.id in functions):
            return True
    return False


def process_helpers(tree: ast.Module, starters: tuple[set[str], set[str]]) -> set[str]:
    """The module's functions and fixtures that start a process, directly or through one another."""
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    found: set[str] = set()
    while True:
        more = {
            name
            for name, node in functions.items()
            if name not in found and starts_a_process(node, found, starters)
        }
        if not more:
            return found
        found |= more


def marks(decorators: list[ast.expr]) -> set[str]:
    names = set()
    for decorator in decorators:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute):
            names.add(target.attr)
    return names


def module_is_slow(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            values = node.value.elts if isinstance(node.value, ast.List) else [node.value]
            if "slow" in marks(values):
                return True
    return False


def collected_tests(body: list[ast.stmt], class_marks: set[str] = frozenset()):
    """`(test function, marks on it or its class)` for the module's tests, test classes' methods included."""
    for node in body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            yield node, class_marks | marks(node.decorator_list)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            yield from collected_tests(node.body, class_marks | marks(node.decorator_list))


def unmarked_process_tests(source: str) -> list[str]:
    tree = ast.parse(source)
    if module_is_slow(tree):
        return []
    starters = process_starters(tree)
    helpers = process_helpers(tree, starters)
    return [
        node.name
        for node, node_marks in collected_tests(tree.body)
        if (starts_a_process(node, helpers, starters) or {a.arg for a in node.args.args} & helpers)
        and "slow" not in node_marks
    ]


def test_the_check_finds_a_process_started_through_a_fixture_or_helper():
    source = """
import subprocess, pytest
def launch(args):
    return subprocess.run(args)
@pytest.fixture
def served():
    return launch(["app"])
def test_direct():
    subprocess.Popen(["x"])
def test_through_fixture(served):
    pass
@pytest.mark.slow
def test_marked():
    launch(["y"])
def test_in_process():
    assert 1
"""
    assert unmarked_process_tests(source) == ["test_direct", "test_through_fixture"]
    aliased = """
import subprocess as sp
from subprocess import check_output as output
def test_alias():
    sp.run(["x"])
def test_imported_by_name():
    output(["x"])
class TestGroup:
    def test_method(self):
        sp.Popen(["x"])
"""
    assert unmarked_process_tests(aliased) == ["test_alias", "test_imported_by_name", "test_method"]
    assert unmarked_process_tests("import pytest\npytestmark = [pytest.mark.slow]\n" + source) == []


@pytest.mark.parametrize("path", sorted(TESTS.glob("test_*.py")), ids=lambda p: p.name)
def test_tests_that_start_a_process_are_marked_slow(path: Path):
    assert unmarked_process_tests(path.read_text()) == [], f"{path.name}: mark these @pytest.mark.slow"
