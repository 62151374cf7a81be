"""The balloon level over packed rings (--ring packed): the reference pair passes, every balloon feature
runs there, the split ring's checks are not-applicable, and the hinting mutants are still caught with
their IDs."""

from __future__ import annotations

import json

import pytest

from conformance.cli import main
from conformance.registry import BUILTIN, DutError, machine_for, resolve
from conformance.runner import run
from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.driver import BalloonDriver
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.features import Feature
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.split.driver import SplitQueueDriver

PACKED = Feature.VIRTIO_F_RING_PACKED.mask


def _turns(dev, drv, n=6):
    for _ in range(n):
        dev.run()
        irq = dev.take_interrupts()
        drv.interrupt(irq.queues, irq.config)
        drv.run()


@pytest.mark.parametrize("offer_packed", [False, True])
def test_the_reference_pair_takes_the_negotiated_ring(offer_packed):
    os = GuestOS(160)
    dev = BalloonDevice(os.mem, BalloonDevice(os.mem).offered | (PACKED if offer_packed else 0))
    drv = BalloonDriver()
    assert drv.probe(dev, os)
    assert bool(drv.negotiated & PACKED) == offer_packed  # RSV-DRV-4: accepted whenever offered
    assert {type(q) for q in drv.vqs.values()} == {PackedQueueDriver if offer_packed else SplitQueueDriver}
    assert all(isinstance(q, PackedQueueDevice) == offer_packed for q in dev.queues.values())
    dev.set_target(12)
    _turns(dev, drv)
    assert len(drv.balloon) == 12 == dev.config.get("actual")
    dev.hint_start()
    _turns(dev, drv)
    assert dev.hint is not None and dev.hint.echoed and os.pages.hinted
    assert dev.error is None


def test_reference_over_packed_rings_passes_with_the_ring_named(tmp_path):
    report = tmp_path / "p.json"
    assert main(["run", "--ring", "packed", "--profile", "dev", "--quiet", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["ring"] == "packed" and data["summary"]["fail"] == 0 and not data["errors"]
    got = {(r["id"], r["role"]): (r["verdict"], r["level"]) for r in data["requirements"]}
    for req, role in (("PACKED-DEV-D1", "device"), ("PACKED-DRV-1", "driver"), ("PACKED-DRV-D12", "driver"),
                      ("RSV-DRV-4", "driver"), ("BAL-FPH-DEV-3", "device"), ("BAL-FPH-DRV-3", "driver"),
                      ("BAL-FPR-DEV-2", "device"), ("BAL-PP-DRV-2", "driver"), ("BAL-ST-DEV-1", "device"),
                      ("BAL-OP-DRV-1", "driver")):
        assert got[req, role][0] == "pass", (req, got[req, role])
    assert got["PACKED-DEV-D10", "device"] == ("pass", "balloon+virtqueue")  # both levels, not split queues
    assert got["SPLIT-DEV-D3", "device"][0] == "not-applicable"
    assert got["SPLIT-DRV-21", "driver"][0] == "not-applicable"


def test_packed_machine_classes_say_so_and_reproduce():
    impl = resolve("reference", "device", ring="packed")
    assert resolve("reference", "device", ring="packed") is impl  # one machine class per implementation
    cls = machine_for(impl)
    assert cls.ring == "packed" and cls.__name__ == "ReferencePackedDeviceConformance"
    assert machine_for(BUILTIN["reference", "device"]).ring == "split"


def test_a_mutant_made_for_packed_rings_runs_there_and_resolves_to_itself():
    impl = BUILTIN["mutant-report-len-unwritten-packed", "device"]
    assert impl.ring == "packed" and machine_for(impl).ring == "packed"
    assert resolve(impl.name, "device", ring="packed") is impl  # the counterexample's header resolves it so
    with pytest.raises(DutError, match="use --ring packed"):
        resolve(impl.name, "device", ring="split")


#: Mutants of balloon features (hinting above all) that must fail with their own IDs over packed rings
#: (the last one runs there of itself: its used lengths break PACKED-DEV-D13, not SPLIT-DEV-15).
SAMPLE = ("mutant-reused-command-id/device", "mutant-applies-stale-hints/device",
          "mutant-publishes-reserved-id/device", "mutant-never-done/device", "mutant-double-echo/driver",
          "mutant-missing-stop/driver", "mutant-long-command-id/driver", "mutant-keeps-hinted-after-done/driver",
          "mutant-report-zero-under-poison/device", "mutant-twelve-byte-stats/driver",
          "mutant-report-len-unwritten-packed/device")


@pytest.mark.parametrize("spec", SAMPLE)
def test_mutant_is_caught_over_packed_rings_with_its_id(spec):
    name, role = spec.split("/")
    impl = resolve(name, role, ring="packed")
    res = run(impl, "ci", max_failures=0)
    failed = {v.requirement.id for v in res.verdicts if v.verdict == "fail"}
    assert failed and failed <= set(impl.breaks), (failed, res.errors)
    assert not res.errors
