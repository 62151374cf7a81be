"""Device notifications: used buffer notifications and their suppression (§2.7.7, §2.7.10) including a
stray NO_INTERRUPT bit under EVENT_IDX (SPLIT-DEV-11), spurious available buffer notifications
(SPLIT-DEV-21), and configuration changes (§2.5.1, §4.1.5.4)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from refmodel.balloon.queues import BALLOON_QUEUES
from refmodel.virtio.constants import VIRTQ_AVAIL_F_NO_INTERRUPT
from refmodel.virtio.split.layout import AVAIL_FLAGS, used_event_offset
from refmodel.virtio.transport import Interrupts

from conformance.harness import ImplementationError
from conformance.machines.base import note, step
from conformance.machines.device.base import DeviceMachine
from conformance.machines.notify import Kind, PackedSuppression, Suppression, is_packed, owed_req, suppression_of

OWED_LOOKS = 3  # interrupt collections an asynchronous device gets to deliver a due notification
QUEUE_NAMES = st.sampled_from([q.name for q in BALLOON_QUEUES])


class DeviceNotifications(DeviceMachine):
    def _suppression(self, vq: Any) -> Suppression | PackedSuppression:
        """What the reference driver asks of the device for ``vq`` now (on either ring)."""
        return suppression_of(Kind.USED_BUFFER, self.os.mem, vq)

    def _collect_interrupts(self) -> None:
        """Take the device's interrupts, check them against §2.7.7/2.7.10, deliver them to the driver.

        With per-queue interrupts every queue is judged. With one shared interrupt (INTx/ISR) a queue is
        judged only when it alone moved, nothing was owed from before, no config change came with it and,
        on a lagging device, the look before saw nothing move: the interrupt, if any, can then only be its
        own (a notification follows its used buffers). Otherwise a due notification is only
        awaited (:meth:`_owed_check`)."""
        irq = self.dev.take_interrupts()
        if not isinstance(irq, Interrupts):
            raise ImplementationError("device.take_interrupts", f"returned {irq!r}, expected Interrupts")
        moved = [n for n in self.drv.vqs if self._used_idx(n) != self.last_signalled[n]]
        # Not with a config interrupt: QEMU's ISR reads 0x3 for a config change, the queue bit too. Nor
        # after a look that saw a queue move on a lagging device: its interrupt may come only now (QEMU
        # signals free_page_vq from an iothread), and the shared bit cannot say whose it is.
        late = self.irq_lag and self.moved_last
        sole = moved[0] if len(moved) == 1 and not self.owed and not irq.config and not late else None
        self.moved_last = bool(moved)
        for name, vq in self.drv.vqs.items():
            new, old = self._used_idx(name), self.last_signalled[name]
            if self.per_queue_irq:
                self._judge(name, vq, old, new, self.drv.index_of[name] in irq.queues)
            elif name == sole:
                self._judge(name, vq, old, new, bool(irq.queues))
            elif new != old or name in self.owed:
                self._owed_check(name, vq, old, new, bool(irq.queues))
            self.last_signalled[name] = new
        self.drv.interrupt(irq.queues, irq.config)
        self._pending_config = self._pending_config or irq.config

    def _judge(self, name: str, vq: Any, old: int, new: int, notified: bool) -> None:
        """Whether ``name``, moved from ``old`` to ``new``, was notified as the driver asked. A device whose
        interrupts lag its used ring (``interrupts_lag``; any on a shared interrupt) may deliver an owed
        notification with a later collection."""
        lag = self.irq_lag or not self.per_queue_irq
        if name in self.owed:  # owed from before: this notification (or its absence) is for that
            self._owed_check(name, vq, old, new, notified)
            return
        if new == old:
            return
        wish = self._suppression(vq)
        if wish.ignored_req:
            self.R.saw(wish.ignored_req)  # used_event holds whatever used_notifications left there
        # Owed for what moved since the last look; allowed too if due since the last notification (a
        # lagging device decides over the used buffers since it last signalled, which a look may split).
        owed, ok = wish.allowed(notified, new, old, self.notified_at.get(name, old))
        if owed and not notified and lag:
            self.owed[name] = (old, new, 1)
            return
        self.R.check(self._owed_req(name, vq, owed), ok, f"{name}: used idx {old}->{new} with {wish}: "
                     f"{'no notification' if owed else 'notified'}")
        if notified:
            self.notified_at[name] = new

    def _owed_check(self, name: str, vq: Any, old: int, new: int, notified: bool) -> None:
        """An asynchronous device may signal after we looked: a notification it owes may come with the
        next collection; one still missing then is a failure."""
        req = self._owed_req(name, vq, owed=True)
        owed = self.owed.pop(name, None)
        if notified:
            self.R.saw(req)
            self.notified_at[name] = new
            return
        if owed is not None:
            first, _, looks = owed
            if looks >= OWED_LOOKS:
                self.R.check(req, False, f"{name}: used idx moved from {first} to {new} with a notification due "
                             f"and none came in {looks} looks")
            self.owed[name] = (first, new, looks + 1)
        elif new != old and self._suppression(vq).due(new, old):
            self.owed[name] = (old, new, 1)

    def _config_op(self, op: str, *args: Any) -> list[int]:
        """A host operation that changes config: the generation must move and the driver be told."""
        before = self.dev.config_generation()
        snapshot = [self.dev.read_config(f.offset, f.size) for f in self._fields()]
        getattr(self.dev, op)(*args)
        after = [self.dev.read_config(f.offset, f.size) for f in self._fields()]
        irq_before = self._pending_config
        self._pending_config = False
        self._collect_interrupts()
        if snapshot != after:
            self.R.check("CFG-DEV-2", self.dev.config_generation() != before,
                         f"{op}: config changed {snapshot} -> {after}, generation stayed {before}")
            self.R.check("NOTIFY-DEV-D1", self._pending_config or irq_before,
                         f"{op}: config changed {snapshot} -> {after} without a configuration change notification")
        return after

    def _set_used_notifications(self, name: str, enabled: bool) -> None:
        """The driver asks for (or suppresses) used buffer notifications on ``name``."""
        vq = self.drv.vqs.get(name)
        if vq is None:
            return
        # Entries the device used so far were judged under the old setting: the window restarts.
        self._collect_interrupts()
        self.last_signalled[name] = self.notified_at[name] = self._used_idx(name)
        self.owed.pop(name, None)
        vq.set_used_notifications(enabled)
        if not vq.event_idx and not is_packed(vq):  # SPLIT-DEV-8: garbage in used_event must not matter
            self.os.mem.write_u16(vq.addrs.avail + used_event_offset(vq.queue_size), 0x5A5A)

    def _stray_no_interrupt(self, name: str, on: bool) -> None:
        """With EVENT_IDX, set (or clear) NO_INTERRUPT in avail flags, which the driver must not
        (SPLIT-DRV-14) and the device must ignore (SPLIT-DEV-11)."""
        vq = self.drv.vqs[name]
        self._collect_interrupts()
        self.os.mem.write_u16(vq.addrs.avail + AVAIL_FLAGS, VIRTQ_AVAIL_F_NO_INTERRUPT if on else 0)
        (self.stray_flag.add if on else self.stray_flag.discard)(name)

    def _owed_req(self, name: str, vq: Any, owed: bool) -> str:
        """The requirement a notification decision falls under. Used only right after the same queue was
        judged without the stray bit, so a missing notification here is the bit's doing (SPLIT-DEV-11)."""
        if owed and name in self.stray_flag:
            return "SPLIT-DEV-11"
        return owed_req(Kind.USED_BUFFER, vq, owed)

    @step(name=QUEUE_NAMES, enabled=st.booleans())
    def used_notifications(self, name: str, enabled: bool) -> None:
        self._set_used_notifications(name, enabled)
        note(f"driver {'asks for' if enabled else 'suppresses'} used buffer notifications on {name}")

    @step(name=QUEUE_NAMES)
    def spurious_notify(self, name: str) -> None:
        """An available buffer notification with nothing new (SPLIT-DEV-21, PACKED-DEV-D12)."""
        if name in self.drv.vqs:
            self.dev.notify(self.drv.index_of[name])
            self.R.saw("PACKED-DEV-D12" if self.packed else "SPLIT-DEV-21")
        note(f"driver sends a spurious notification on {name}")
