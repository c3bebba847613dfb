"""The suite's tiers: every test that starts another process carries the `slow` mark, so `pytest -m "not slow"` is
quick and stays in-process. Read from the test files' syntax trees, not by running them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: Calls that start another process or a browser.
PROCESS_STARTERS = {"run", "Popen", "check_call", "check_output", "sync_playwright", "async_playwright"}


def starts_a_process(node: ast.AST, helpers: set[str]) -> bool:
    """Whether `node` calls subprocess.*, Playwright, or one of the module's own helpers that does."""
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        function = call.func
        if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
            if function.value.id == "subprocess" and function.attr in PROCESS_STARTERS:
                return True
        if isinstance(function, ast.Name) and (
            function.id in helpers or function.id in PROCESS_STARTERS - {"run"}
        ):
            return True
    return False


def process_helpers(tree: ast.Module) -> set[str]:
    """The module's functions and fixtures that start a process, directly or through one another."""
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    found: set[str] = set()
    while True:
        more = {
            name for name, node in functions.items() if name not in found and starts_a_process(node, found)
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


def unmarked_process_tests(source: str) -> list[str]:
    tree = ast.parse(source)
    if module_is_slow(tree):
        return []
    helpers = process_helpers(tree)
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and node.name.startswith("test_")
        and (starts_a_process(node, helpers) or {a.arg for a in node.args.args} & helpers)
        and "slow" not in marks(node.decorator_list)
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
    assert unmarked_process_tests("import pytest\npytestmark = [pytest.mark.slow]\n" + source) == []


@pytest.mark.parametrize("path", sorted(TESTS.glob("test_*.py")), ids=lambda p: p.name)
def test_tests_that_start_a_process_are_marked_slow(path: Path):
    assert unmarked_process_tests(path.read_text()) == [], f"{path.name}: mark these @pytest.mark.slow"
