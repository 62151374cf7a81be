"""pytest plugin: ``pytest --virtio-dut NAME|module:factory [--virtio-role device|driver]``.

Runs the conformance suite once per session and turns each requirement into a test item: pass,
fail (with the counterexample), or skipped (not applicable, not checkable, no check). A
known-deviations file (``--virtio-known-deviations``, a path or a list that ships with the suite, e.g.
``qemu``) turns listed failures into xfails, so a vendor can adopt the suite one requirement at a time.
``module:factory`` is imported from the current directory. An implementation that lacks a method of its
role is one failing item whose message names the method. ``--virtio-profile`` and ``--virtio-seed`` are
the CLI's ``--profile`` and ``--seed``; ``--virtio-dut reference`` also checks the reference split
virtqueues at the virtqueue level, merged into the same items.
"""

from __future__ import annotations

from typing import Any

import pytest

from conformance.cli import KNOWN_DEVIATION_LISTS, load_known_deviations
from conformance.interface import InterfaceError
from conformance.registry import BUILTIN, DutError, resolve
from conformance.profiles import PROFILES, ProfileError, profile
from conformance.runner import RunResult, Verdict, run_levels


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("virtio-conformance")
    g.addoption("--virtio-dut", help="implementation under test: built-in name or module:factory")
    g.addoption("--virtio-role", choices=("device", "driver"), help="side under test (default: from the name)")
    g.addoption("--virtio-profile", default="ci", choices=tuple(PROFILES))
    g.addoption("--virtio-seed", type=int, default=None, help="force Hypothesis' seed (a whole number >= 0)")
    g.addoption("--virtio-known-deviations", help="file of requirement IDs expected to fail, or a list that "
                f"ships with the suite ({', '.join(KNOWN_DEVIATION_LISTS)})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "verifies(*ids): the catalogue requirements this test checks")


class RequirementItem(pytest.Item):
    def __init__(self, *, verdict: Verdict, result: RunResult, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verdict, self.result = verdict, result
        self.add_marker(pytest.mark.verifies(verdict.requirement.id))

    def runtest(self) -> None:
        v = self.verdict
        if v.verdict == "fail":
            if v.known_deviation:
                pytest.xfail(f"{v.accepted_by}: {v.reason.removeprefix('known deviation: ')}")
            raise RequirementFailed(v)
        if v.verdict != "pass":
            pytest.skip(f"{v.verdict}: {v.reason}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, RequirementFailed):
            v = excinfo.value.verdict
            lines = [f"{v.requirement.cite()}: {v.requirement.text}", f"  {v.reason}"]
            if v.failure is not None:
                lines += ["counterexample (replayable):"] + [f"    {s}" for s in v.failure.counterexample]
            return "\n".join(lines)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[str, int, str]:
        r = self.verdict.requirement
        return ("virtio-conformance", 0, f"{r.id} §{r.section}")


class RequirementFailed(AssertionError):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


class ErrorItem(pytest.Item):
    def __init__(self, *, detail: str, trace: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.detail, self.trace = detail, trace

    def runtest(self) -> None:
        raise AssertionError("\n".join([self.detail, *self.trace]))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value)  # the detail and its replayable steps; the plugin's frames say nothing

    def reportinfo(self) -> tuple[str, int, str]:
        return ("virtio-conformance", 0, self.name)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    dut = config.getoption("--virtio-dut")
    if not dut:
        return
    role = config.getoption("--virtio-role")
    try:
        if role is None:
            roles = [r for (n, r) in BUILTIN if n == dut]
            role = roles[0] if roles else "device"
        impl = resolve(dut, role)
        known = load_known_deviations(config.getoption("--virtio-known-deviations"))
        seed = config.getoption("--virtio-seed")
        profile(config.getoption("--virtio-profile"), seed)
    except (DutError, ProfileError) as e:
        raise pytest.UsageError(str(e)) from None
    try:  # the reference's split virtqueues are checked at the virtqueue level too, and merged
        result = run_levels(impl, config.getoption("--virtio-profile"), known_deviations=known, seed=seed)
    except (InterfaceError, DutError) as e:  # before any example: one item, one line
        items.append(ErrorItem.from_parent(session, name=f"{impl.name}[interface]", detail=str(e), trace=()))
        return
    for v in result.verdicts:
        items.append(RequirementItem.from_parent(session, name=f"{impl.name}[{v.requirement.id}]", verdict=v,
                                                 result=result))
    for i, err in enumerate(result.errors):
        items.append(ErrorItem.from_parent(session, name=f"{impl.name}[error-{i}]", detail=err.detail,
                                           trace=err.counterexample))
