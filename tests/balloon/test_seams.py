"""The reference device and driver are one part per operation behind a facade; what a third party (or
a mutant) may override is marked "Override point" in its docstring. Every such point is on the path
the reference takes, so overriding it changes behaviour, and the mutants use nothing private."""

import ast
from pathlib import Path

from refmodel.balloon.config import VirtioBalloonConfig
from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.driver import CFG_ACTUAL, CFG_CMD_ID, CFG_NUM_PAGES, CFG_POISON, BalloonDriver
from refmodel.balloon.hinting import FreePageHintDevice, FreePageHintDriver
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.split.device import SplitQueueDevice

ROOT = Path(__file__).resolve().parents[2]
MUTANTS, REFMODEL = ROOT / "conformance" / "mutants", ROOT / "refmodel"
EXPECTED = {
    BalloonDevice: {"make_queue", "make_hint_device", "notify_config_change", "on_inflateq", "on_deflateq",
                    "on_statsq", "on_reporting_vq"},
    BalloonDriver: {"choose_features", "write_poison", "send_pfns", "release", "waits_for_deflate_ack",
                    "update_actual", "send_stats", "encode_stats", "fill_reported", "kick", "make_hint_driver",
                    "indirect_arena", "queue_indices"},
    FreePageHintDevice: {"next_command_id"},
    FreePageHintDriver: {"send_command_id", "send_stop", "release_after_done"},
    SplitQueueDevice: {"walk_untrusted", "write_used_element"},
}


def override_points(cls):
    return {name for name in dir(cls) if callable(getattr(cls, name, None))
            and "Override point" in (getattr(cls, name).__doc__ or "")}


def recording(cls, calls, **extra):
    """A subclass that notes each override point called, then does what the reference does."""
    def wrap(name):
        base = getattr(cls, name)

        def method(self, *args, **kwargs):
            calls.add(name)
            return base(self, *args, **kwargs)
        return method
    return type(f"Recording{cls.__name__}", (cls,), {**{n: wrap(n) for n in override_points(cls)}, **extra})


def test_the_override_points_are_the_documented_ones():
    assert {cls: override_points(cls) for cls in EXPECTED} == EXPECTED


def test_config_offsets_are_the_struct_fields():
    assert (CFG_NUM_PAGES, CFG_ACTUAL, CFG_CMD_ID, CFG_POISON) == tuple(
        getattr(VirtioBalloonConfig, f).offset for f in ("num_pages", "actual", "free_page_hint_cmd_id", "poison_val"))


def settle(dev, drv, rounds=6):
    for _ in range(rounds):
        dev.run()
        irq = dev.take_interrupts()
        drv.interrupt(irq.queues, irq.config)
        drv.run()


def test_every_override_point_is_on_the_reference_path():
    calls = set()
    queue = recording(SplitQueueDevice, calls)
    hint_dev, hint_drv = recording(FreePageHintDevice, calls), recording(FreePageHintDriver, calls)
    device = recording(BalloonDevice, calls)
    driver = recording(BalloonDriver, calls)

    class Device(device):
        def make_queue(self, name, *args, **kwargs):
            super().make_queue(name, *args, **kwargs)
            return queue(*args, **kwargs)

        def make_hint_device(self, *args, **kwargs):
            super().make_hint_device(*args, **kwargs)
            return hint_dev(*args, **kwargs)

    class Driver(driver):
        def make_hint_driver(self, *args, **kwargs):
            super().make_hint_driver(*args, **kwargs)
            return hint_drv(*args, **kwargs)

    os_ = GuestOS(256)
    dev, drv = Device(os_.mem), Driver()
    assert drv.probe(dev, os_)
    for _ in range(30):
        os_.workload_alloc_write()
    dev.set_target(40)
    settle(dev, drv)
    dev.set_target(7)
    settle(dev, drv)
    assert dev.request_stats()
    dev.hint_start()
    settle(dev, drv, rounds=80)  # until no free block is left: the driver's STOP
    dev.hint_done()
    settle(dev, drv)
    assert drv.report() and drv.oom(2) == 2
    settle(dev, drv)
    assert dev.error is None and drv.error is None and os_.corrupted() == []
    assert calls == set().union(*EXPECTED.values())


def _private_names(tree):
    """``_name`` attributes, methods and class attributes a module defines (dunders aside)."""
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
              for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_mutants_reach_nothing_private():
    """A mutant may use its own private names, never the reference's."""
    reference = set().union(*(_private_names(ast.parse(p.read_text())) for p in REFMODEL.rglob("*.py")))
    for path in sorted(MUTANTS.glob("*.py")):
        tree = ast.parse(path.read_text())
        clash = _private_names(tree) & reference  # e.g. assigning the reference's private state
        assert not clash, (path.name, sorted(clash))
        private = sorted(f"{path.name}:{n.lineno}: .{n.attr}" for n in ast.walk(tree)
                         if isinstance(n, ast.Attribute) and n.attr in reference)
        assert not private, private
