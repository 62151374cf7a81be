"""The implementation under test for bench_mutation: the reference, with one module replaced by a mutant.

The suite's own side (the reference peer, the oracle) imports the same refmodel modules, so the mutant is
not written over them: the mutated module, and the implementation modules that import it, are executed
again as a private copy that only these factories use. Env: ``VIRTIO_MUTANT_MODULE`` (dotted name) and
``VIRTIO_MUTANT_SOURCE`` (the mutated file); without them the copy is the unmutated reference (the
baseline, which must pass everything). Exceptions keep the suite's classes (it tells them apart by
class, e.g. ``QueueFull``); enums and the rest are the copy's own, so the copy stays consistent.
``refmodel.virtio.rings`` stays the suite's (not in IMPLEMENTATION), so a balloon-level
device or driver builds unmutated split queues: split-queue mutants run at the virtqueue level.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

#: The reference's implementation modules a mutant may sit in (what the suite's peer side uses too).
IMPLEMENTATION = (
    "refmodel.balloon.config", "refmodel.balloon.queues", "refmodel.balloon.stats", "refmodel.balloon.poison",
    "refmodel.virtio.split.device", "refmodel.virtio.split.driver", "refmodel.balloon.inflate",
    "refmodel.balloon.reporting", "refmodel.balloon.hinting", "refmodel.balloon.device",
    "refmodel.balloon.driver",
)
_copy: dict[str, ModuleType] | None = None


def _imports(name: str) -> set[str]:
    """The implementation modules ``name`` imports at module level (not under TYPE_CHECKING)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    return {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module in IMPLEMENTATION}


def _dependants(mutated: str) -> list[str]:
    """``mutated`` and every implementation module that imports it, directly or not, in import order."""
    deps = {m: _imports(m) for m in IMPLEMENTATION}
    out = {mutated}
    while True:
        more = {m for m in IMPLEMENTATION if deps[m] & out} - out
        if not more:
            return [m for m in IMPLEMENTATION if m in out]
        out |= more


class _Mutated(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, source: str) -> None:
        self.name, self.source = name, source

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_file_location(fullname, self.source)


def _load() -> dict[str, ModuleType]:
    global _copy
    if _copy is not None:
        return _copy
    mutated = os.environ.get("VIRTIO_MUTANT_MODULE") or "refmodel.balloon.device"
    source = os.environ.get("VIRTIO_MUTANT_SOURCE")
    names = _dependants(mutated)
    for top in ("refmodel.balloon.device", "refmodel.balloon.driver", "refmodel.virtio.split.device",
                "refmodel.virtio.split.driver"):
        importlib.import_module(top)  # the suite's own copies first
    saved = {n: sys.modules.pop(n) for n in names}
    parents = {n: getattr(sys.modules[n.rpartition(".")[0]], n.rpartition(".")[2]) for n in names}
    finder = _Mutated(mutated, source) if source else None
    if finder:
        sys.meta_path.insert(0, finder)
    try:
        fresh = {n: importlib.import_module(n) for n in names}
    finally:
        if finder:
            sys.meta_path.remove(finder)
        sys.modules.update(saved)
        for n, mod in parents.items():
            setattr(sys.modules[n.rpartition(".")[0]], n.rpartition(".")[2], mod)
    for n, mod in fresh.items():  # raise and catch the suite's exception classes
        for k, v in list(vars(mod).items()):
            own = getattr(saved.get(getattr(v, "__module__", ""), None), k, None)
            if isinstance(v, type) and issubclass(v, BaseException) and isinstance(own, type) \
                    and own is not v:
                setattr(mod, k, own)
    _copy = {n: fresh.get(n) or sys.modules[n] for n in IMPLEMENTATION}
    return _copy


def device(mem: Any) -> Any:
    return _load()["refmodel.balloon.device"].BalloonDevice(mem)


def driver() -> Any:
    return _load()["refmodel.balloon.driver"].BalloonDriver()


def queue_device(*args: Any, **kwargs: Any) -> Any:
    return _load()["refmodel.virtio.split.device"].SplitQueueDevice(*args, **kwargs)


def queue_driver(*args: Any, **kwargs: Any) -> Any:
    return _load()["refmodel.virtio.split.driver"].SplitQueueDriver(*args, **kwargs)
