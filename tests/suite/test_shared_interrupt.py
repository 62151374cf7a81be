"""A device with one shared interrupt (INTx/ISR, as QEMU 7.2's balloon): notification suppression is
still judged, in the windows where one queue alone moved (SPLIT-DEV-8/9/13)."""

from __future__ import annotations

from typing import Any

import pytest

from refmodel.balloon.device import BalloonDevice
from refmodel.capabilities import Capability
from refmodel.virtio.transport import Interrupts

from conformance.mutants.device import IgnoresEventIdx, IgnoresNoInterrupt
from conformance.registry import Implementation
from conformance.runner import run


class _Shared:
    """take_interrupts() says only that some queue signalled, as an ISR does; and its signals lag."""

    capabilities = BalloonDevice.capabilities - {Capability.PER_QUEUE_INTERRUPTS}
    interrupts_lag = True

    def take_interrupts(self) -> Interrupts:
        irq = super().take_interrupts()  # type: ignore[misc]
        queues: Any = frozenset(self.index_of.values()) if irq.queues else frozenset()  # type: ignore[attr-defined]
        return Interrupts(queues, irq.config)


def _shared(base: type) -> Implementation:
    cls = type(f"Shared{base.__name__}", (_Shared, base), {})
    return Implementation(cls.__name__, "device", cls, f"{base.__name__} behind one shared interrupt")


def test_the_reference_device_behind_a_shared_interrupt_passes_and_suppression_is_judged():
    res = run(_shared(BalloonDevice), "dev")
    by_id = res.by_id()
    assert not res.errors and not [v for v in res.verdicts if v.verdict == "fail"]
    for req in ("SPLIT-DEV-8", "SPLIT-DEV-9", "SPLIT-DEV-10", "SPLIT-DEV-12", "SPLIT-DEV-13"):
        assert by_id[req].verdict == "pass", (req, by_id[req])


@pytest.mark.parametrize("mutant", [IgnoresNoInterrupt, IgnoresEventIdx])
def test_a_device_that_ignores_suppression_is_caught_behind_a_shared_interrupt(mutant):
    res = run(_shared(mutant), "dev", max_failures=0)
    assert res.by_id()[mutant.breaks].verdict == "fail"


class _Late(_Shared):
    """Every signal comes one collection late, as QEMU's free_page_vq signals from its iothread."""

    def take_interrupts(self) -> Interrupts:
        irq = super().take_interrupts()
        held = getattr(self, "_held", None) or Interrupts(frozenset(), False)
        self._held = irq
        return Interrupts(held.queues, held.config or irq.config)

    def reset_state(self) -> None:
        super().reset_state()  # type: ignore[misc]
        self._held = None  # a reset drops what was pending


def test_a_late_signal_behind_a_shared_interrupt_is_not_charged_to_the_next_queue_that_moves():
    res = run(Implementation("LateShared", "device", type("LateShared", (_Late, BalloonDevice), {}),
                             "the reference device, its shared interrupt one collection late"), "dev")
    failed = {v.requirement.id: v.failure for v in res.verdicts if v.verdict == "fail"}
    assert not res.errors and not failed, failed
