"""Traceability read from the source: which model rules name each requirement (``refmodel``), which
conformance rules check it (``conformance``), and which tests verify it (``@pytest.mark.verifies``).

Everything is found by parsing the code (``ast``), once per process: a rule is the function or method
containing a string literal that is exactly a catalogue ID, so the docs and the tests cannot drift from
the code. Callers must not modify the returned dicts.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import defaultdict
from functools import cache
from pathlib import Path

import attrs

from spec.catalogue import catalogue

ROOT = Path(__file__).resolve().parents[1]
#: Modules that name requirements without checking them: the traceability tables themselves and the
#: deliberately broken implementations (``breaks = "ID"``).
_NOT_CHECKS = ("conformance/checks.py", "conformance/mutants/", "conformance/trace.py", "conformance/registry.py")


@attrs.frozen
class Site:
    path: str  # relative to the repository root
    line: int
    qualname: str  # module.Class.function, or module for module-level code

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


class _Finder(ast.NodeVisitor):
    def __init__(self, module: str, path: str, ids: set[str], out: dict[str, list[Site]]) -> None:
        self.module, self.path, self.ids, self.out = module, path, ids, out
        self.stack: list[str] = []
        self.seen: set[tuple[str, str]] = set()

    def _scope(self, node: ast.AST, name: str) -> None:
        self.stack.append(name)
        self.generic_visit(node)
        self.stack.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scope(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scope(node, node.name)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and node.value in self.ids:
            qual = ".".join([self.module, *self.stack])
            if (node.value, qual) not in self.seen:  # one site per rule, at its first mention
                self.seen.add((node.value, qual))
                self.out[node.value].append(Site(self.path, node.lineno, qual))


_ID = re.compile(r"\b[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+\b")


def _scopes(tree: ast.AST, module: str) -> list[tuple[int, int, str]]:
    """(first line, last line, qualname) of every function and class, innermost last."""
    out: list[tuple[int, int, str]] = []

    def walk(node: ast.AST, stack: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = [*stack, child.name]
                out.append((child.lineno, child.end_lineno or child.lineno, ".".join([module, *qual])))
                walk(child, qual)
            else:
                walk(child, stack)

    walk(tree, [])
    return out


def _mentions(source: str, tree: ast.AST, module: str, ids: set[str]) -> list[tuple[str, int, str]]:
    """IDs named in comments and docstrings, with the function they sit in (its implementation says
    which rule it applies, e.g. ``# BAL-FPH-DEV-3`` beside the tag check)."""
    scopes = _scopes(tree, module)
    places: list[tuple[int, str]] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            places.append((tok.start[0], tok.string))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                places.append((node.body[0].lineno, doc))
    out = []
    for line, text in places:
        inner = [q for a, b, q in scopes if a <= line <= b]
        if not inner:
            continue  # module-level prose, not a rule
        for req_id in _ID.findall(text):
            if req_id in ids:
                out.append((req_id, line, inner[-1]))
    return out


def _scan(package: str, skip: tuple[str, ...] = (), *, mentions: bool = False) -> dict[str, list[Site]]:
    ids = set(catalogue())
    out: dict[str, list[Site]] = defaultdict(list)
    base = ROOT / package
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if str(rel).startswith(tuple(skip)):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        source = path.read_text()
        tree = ast.parse(source, str(rel))
        finder = _Finder(module, str(rel), ids, out)
        finder.visit(tree)
        if mentions:
            for req_id, line, qual in _mentions(source, tree, module, ids):
                if (req_id, qual) not in finder.seen:
                    finder.seen.add((req_id, qual))
                    out[req_id].append(Site(str(rel), line, qual))
    return dict(out)


@cache
def model_rules() -> dict[str, list[Site]]:
    """Requirement ID -> the reference model's functions that enforce or apply it: they raise it, or name
    it in a comment or docstring beside the code that applies it."""
    return _scan("refmodel", mentions=True)


@cache
def conformance_checks() -> dict[str, list[Site]]:
    """Requirement ID -> the conformance machines' rules that check it (or record why they cannot)."""
    return _scan("conformance", _NOT_CHECKS)


@cache
def verifying_tests() -> dict[str, list[str]]:
    """Requirement ID -> pytest node IDs marked ``@pytest.mark.verifies(ID, ...)``. Empty when the tests
    are not next to the package (an installed wheel)."""
    out: dict[str, list[str]] = defaultdict(list)
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)
                        and dec.func.attr == "verifies"):
                    for arg in dec.args:
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                            out[arg.value].append(f"{path.relative_to(ROOT)}::{node.name}")
    return dict(out)
