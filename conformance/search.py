"""Keep the search independent of the implementation's source text.

Hypothesis seeds a fraction of its draws with literal constants it collects from the "local" modules
loaded in the process (``hypothesis.internal.conjecture.providers._get_local_constants``). The
implementation under test is local code, so an unrelated edit to it (one unused ``_UNUSED = 0xA5``)
changes which constants are drawn, and a derandomized ``ci`` verdict could flip. During a run the suite
pins that pool to the constants of the model and the machines, which are part of the suite's version.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

#: Packages whose literal constants seed the search: the protocol's own numbers (IDs, sizes, offsets).
SEED_PACKAGES = ("refmodel", "conformance.machines")


def _modules(package: str) -> list[ModuleType]:
    root = importlib.import_module(package)
    out = [root]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        out.append(importlib.import_module(info.name))
    return sorted(out, key=lambda m: m.__name__)


def _hooks() -> tuple[Any, Any] | None:
    """Hypothesis' provider module and its constants extractor, or None on a version without them."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import constants_from_module
    except ImportError:
        return None
    if not callable(getattr(providers, "_get_local_constants", None)) or not hasattr(providers, "CONSTANTS_CACHE"):
        return None
    return providers, constants_from_module


_pool: Any = None


def suite_constants() -> Any:
    """The pinned pool (a Hypothesis ``Constants``), computed once per process."""
    global _pool
    hooks = _hooks()
    if hooks is None:
        return None
    if _pool is None:
        providers, constants_from_module = hooks
        pool = providers.Constants()
        for module in (m for pkg in SEED_PACKAGES for m in _modules(pkg)):
            pool |= constants_from_module(module)
        _pool = pool
    return _pool


@contextlib.contextmanager
def pinned_constants() -> Iterator[bool]:
    """Within the block, Hypothesis draws constants only from :data:`SEED_PACKAGES`.

    Yields whether the pin took effect (False on a Hypothesis without the hook: the run goes on
    unpinned, and the caller may say so).
    """
    hooks = _hooks()
    pool = suite_constants()
    if hooks is None or pool is None:
        yield False
        return
    providers = hooks[0]
    saved = providers._get_local_constants
    providers._get_local_constants = lambda: pool
    providers.CONSTANTS_CACHE.cache.clear()
    try:
        yield True
    finally:
        providers._get_local_constants = saved
        providers.CONSTANTS_CACHE.cache.clear()
