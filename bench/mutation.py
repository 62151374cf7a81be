"""Mutants of the reference (cosmic-ray's operators) and one run of the suite against each (bench_mutation).

A mutant is never written over a source tree: its text goes to a file of its own, and the suite runs with
``--dut bench.mutant_dut:...``, which loads it as a private copy beside the suite's unmutated peer side.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import attrs
import cosmic_ray.plugins
from cosmic_ray.ast import ast_nodes, get_ast
from cosmic_ray.mutating import mutate_code

#: module -> the sides its code runs on; "split" modules follow the enclosing class (Device/Driver), else
#: both (device first; the driver only if the device run did not kill).
MODULES = {
    "refmodel/balloon/device.py": ("device",),
    "refmodel/balloon/driver.py": ("driver",),
    "refmodel/balloon/hinting.py": "split",
    "refmodel/virtio/split/device.py": ("qdevice",),
    "refmodel/virtio/split/driver.py": ("qdriver",),
    "refmodel/balloon/inflate.py": "split",
    "refmodel/balloon/stats.py": "split",
    "refmodel/balloon/reporting.py": "split",
    "refmodel/balloon/poison.py": "split",
    "refmodel/balloon/config.py": ("device", "driver"),
}
#: side -> the suite's command line (after ``python -m conformance run``)
SIDES = {
    "device": ["--dut", "bench.mutant_dut:device", "--role", "device"],
    "driver": ["--dut", "bench.mutant_dut:driver", "--role", "driver"],
    "qdevice": ["--level", "virtqueue", "--dut", "bench.mutant_dut:queue_device", "--role", "device"],
    "qdriver": ["--level", "virtqueue", "--dut", "bench.mutant_dut:queue_driver", "--role", "driver"],
}


@attrs.frozen
class Mutant:
    module: str  # path in the tree
    operator: str
    occurrence: int
    line: int
    before: str  # the line, stripped
    after: str  # the mutated line(s), stripped
    sides: tuple[str, ...]
    following: str = ""  # the next line, stripped: tells apart mutants of equal lines (two @property)

    @property
    def key(self) -> str:
        return f"{self.module}:{self.line} {self.operator.removeprefix('core/')} #{self.occurrence}"

    def source(self, tree: Path) -> str:
        text = mutate_code((tree / self.module).read_text(encoding="utf-8"), _operator(self.operator),
                           self.occurrence)
        assert text is not None, self.key
        return text


@attrs.frozen
class Outcome:
    killed: bool
    killer: str  # a requirement ID, or error:implementation / error:harness / error:timeout
    detail: str
    detect_s: float | None  # from the start of the killing run to its first FAIL or ERROR line
    wall_s: float  # every run this mutant took
    sides_run: tuple[str, ...]


#: The killer of a mutant that does not compile (cosmic-ray turns ``*`` in a signature into ``<<``): no
#: implementation at all, so it is left out of every rate.
INCOMPETENT = "incompetent"


def compiles(text: str, name: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "is" with a literal, and the like: it still compiles
            compile(text, name, "exec")
    except SyntaxError:
        return False
    return True


def _operator(name: str) -> object:
    return cosmic_ray.plugins.get_operator(name)()


def _operators() -> list[str]:
    names = cosmic_ray.plugins.operator_names()
    return [n for n in names if not cosmic_ray.plugins.get_operator(n).arguments()]


def _unevaluated(text: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Spans never run as code: annotations (``from __future__ import annotations``) and exception
    classes (the private copy raises the suite's own, see mutant_dut)."""
    spans = []
    for node in ast.walk(ast.parse(text)):
        parts = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            parts = [a.annotation for a in (*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs,
                                            node.args.vararg, node.args.kwarg) if a and a.annotation]
            parts += [node.returns] if node.returns else []
        elif isinstance(node, ast.AnnAssign):
            parts = [node.annotation]
        elif isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", "").endswith(("Error", "Full", "Exception")) for b in node.bases):
            parts = [node]
        spans += [((p.lineno, p.col_offset), (p.end_lineno or p.lineno, p.end_col_offset or 0))
                  for p in parts]
    return spans


def _sides_at(text: str, line: int, rule: object) -> tuple[str, ...]:
    if rule != "split":
        return rule  # type: ignore[return-value]
    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef) and node.lineno <= line <= (node.end_lineno or node.lineno):
            if "Device" in node.name:
                return ("device",)
            if "Driver" in node.name:
                return ("driver",)
    return ("device", "driver")


def enumerate_mutants(tree: Path, module: str) -> tuple[list[Mutant], int]:
    """Every mutant of ``module`` that changes code that runs, and how many were left out (annotations)."""
    text = (tree / module).read_text(encoding="utf-8")
    lines = text.splitlines()
    skip = _unevaluated(text)
    nodes = list(ast_nodes(get_ast(text)))
    out, left = [], 0
    for name in _operators():
        op = _operator(name)
        occurrence = 0
        for node in nodes:
            for start, _end in op.mutation_positions(node):  # type: ignore[attr-defined]
                if any(a <= start < b for a, b in skip):
                    left += 1
                else:
                    following = lines[start[0]].strip() if start[0] < len(lines) else ""
                    out.append(Mutant(module, name, occurrence, start[0], lines[start[0] - 1].strip(), "",
                                      _sides_at(text, start[0], MODULES[module]), following))
                occurrence += 1
    return out, left


def with_diff(m: Mutant, tree: Path) -> Mutant:
    """``m`` with ``after`` filled in (the mutated lines), from its source."""
    old = (tree / m.module).read_text(encoding="utf-8").splitlines()
    new = m.source(tree).splitlines()
    added = [d[1:].strip() for d in difflib.unified_diff(old, new, n=0, lineterm="")
             if d.startswith("+") and not d.startswith("+++")]
    return attrs.evolve(m, after=" / ".join(added) or "(line removed)")


def _run_side(tree: Path, m: Mutant, source: Path, side: str, profile: str, timeout: float,
              python: str) -> tuple[str | None, str, float | None, float]:
    """One run of the suite: (killer or None, detail, seconds to the first FAIL/ERROR, wall seconds)."""
    report = source.with_suffix(f".{side}.json")
    env = {**os.environ, "VIRTIO_MUTANT_MODULE": m.module.removesuffix(".py").replace("/", "."),
           "VIRTIO_MUTANT_SOURCE": str(source), "PYTHONPATH": str(tree)}
    cmd = ["nice", "-n", "19", python, "-m", "conformance", "run", *SIDES[side], "--profile", profile,
           "--max-failures", "0", "--report", str(report)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    first: float | None = None
    tail: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        tail = (tail + [line.rstrip()])[-5:]
        if first is None and line.startswith(("  FAIL ", "  ERROR ", "  HARNESS ERROR ")):
            first = time.perf_counter() - start
    rc = proc.wait()
    timer.cancel()
    wall = time.perf_counter() - start
    if wall >= timeout:
        return "error:timeout", f"no verdict within {timeout:.0f} s", wall, wall
    try:
        res = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "error:suite", f"exit {rc}, no report: {' | '.join(tail)}", first, wall
    fails = [r for r in res["requirements"] if r["verdict"] == "fail" and not r["known_deviation"]]
    if fails:
        return fails[0]["id"], fails[0]["reason"][:160], first, wall
    errors = [e for e in res["errors"] if e["kind"] != "nondeterministic"]
    if errors:
        return f"error:{errors[0]['kind']}", errors[0]["detail"][:160], first, wall
    return None, "", None, wall


def run_mutant(tree: Path, m: Mutant, profile: str = "ci", timeout: float = 900.0,
               python: str = sys.executable) -> Outcome:
    """Run the suite on each side of ``m`` until one kills it."""
    text = m.source(tree)
    if not compiles(text, m.module):
        return Outcome(False, INCOMPETENT, "the mutated module does not compile", None, 0.0, ())
    with tempfile.TemporaryDirectory(prefix="mutant-") as d:
        source = Path(d) / Path(m.module).name
        source.write_text(text, encoding="utf-8")
        wall, run = 0.0, []
        for side in m.sides:
            killer, detail, detect, w = _run_side(tree, m, source, side, profile, timeout, python)
            wall += w
            run.append(side)
            if killer is not None:
                return Outcome(True, killer, detail, detect, wall, tuple(run))
        return Outcome(False, "", "", None, wall, tuple(run))
