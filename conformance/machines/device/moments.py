"""Rules aimed at the dangerous moments, so the search meets them by construction, not by luck:

* a round ends (DONE, STOP, a new command ID, a driver reset) while hints are on the ring, not yet
  used: they must not be applied (BAL-FPH-DEV-3), the pages released after DONE must stay as they are
  (BAL-FPH-DEV-5), and after a reset the device stays silent (RESET-DEV-2);
* the guest writes a page it had hinted, mid-round: the device must keep the write (BAL-FPH-D4);
* notification suppression is toggled while a batch is on the ring, with and without EVENT_IDX, and
  with a stray NO_INTERRUPT bit under EVENT_IDX (SPLIT-DEV-9 to SPLIT-DEV-13, SPLIT-DEV-11).
"""

from __future__ import annotations

from hypothesis import strategies as st

from refmodel.system.guest import bits
from refmodel.system.provenance import Origin
from refmodel.virtio.features import Feature

from conformance.interface import Capability
from conformance.machines.base import note, step
from conformance.machines.device.hinting import DeviceHinting
from conformance.machines.device.reset import DeviceReset

#: How a round with hints in flight ends.
ROUND_ENDS = ("done", "stop", "new command ID", "reset")


class DeviceMoments(DeviceHinting, DeviceReset):
    def _round_with_hints(self, device_turns: int) -> None:
        """A round under way: started if none is, ``device_turns`` cycles, then the driver's turn, which
        echoes the ID if it has not and puts hints on the ring for the device's next turn."""
        if self.current_id is None:
            self.hint_start(0)
        self._cycles(device_turns)
        self._driver_run()

    @step(needs=lambda self: self._hinting(), end=st.sampled_from(ROUND_ENDS), device_turns=st.integers(1, 2))
    def round_ends_with_hints_in_flight(self, end: str, device_turns: int) -> None:
        """At least one device turn first, so the round ends with hints applied and others on the ring."""
        self._round_with_hints(device_turns)
        if end == "done":
            self.hint_done(0)
        elif end == "stop" and Capability.HINT_STOP in self.caps:
            self.hint_stop(0)
        elif end == "reset":
            self.reset_and_reprobe()
        else:  # a new command ID (also STOP's stand-in on a host that cannot publish STOP)
            end = "new command ID"
            self.hint_start(0)
        self._cycles(2)
        note(f"hints on the ring when the round ends ({end}), then 2 cycles")

    @step(needs=lambda self: self._hinting(), pick=st.integers(0, 1 << 16), device_turns=st.integers(1, 2))
    def guest_reuses_hinted(self, pick: int, device_turns: int) -> None:
        """Mid-round the guest takes back a page it hinted and writes it (FPH-DRV-7, FPH-DRV-9)."""
        self._round_with_hints(1)
        hinted = bits(self.os.pages.hinted)
        if not hinted:
            note("no page is hinted: the guest has none to reuse")
            return
        page = hinted[pick % len(hinted)]
        self.os.pages.reuse_hinted(page)
        self.os.workload_write(page)
        self.history.tick()
        self.history.record([page], Origin.HINT_REUSED)
        self.reused.add(page)
        self._cycles(device_turns)
        note(f"the guest reuses hinted page {page} and writes it, then {device_turns} cycle(s)")

    def _inflate_batch(self) -> None:
        """Two more pages for the balloon: the driver puts them on inflateq; the device has not run."""
        self._config_op("set_target", len(self.drv.balloon) + self.drv.inflating + 2)
        self._driver_run()

    @step(event_idx=st.booleans())
    def suppression_mid_batch(self, event_idx: bool) -> None:
        """Buffers on the ring, then the driver changes its wish before the device uses them (re-probing
        for EVENT_IDX on or off first, if the device offers it). A device that uses a buffer as soon as it
        is kicked (QEMU) is judged under the wish before the change, which is as legal."""
        self._want_feature(Feature.VIRTIO_F_EVENT_IDX, event_idx)
        name, vq = "inflateq", self.drv.vqs["inflateq"]
        self._inflate_batch()
        self._set_used_notifications(name, True)
        self._device_run()  # owed: SPLIT-DEV-10, SPLIT-DEV-12
        if vq.event_idx and not self.packed:  # owed still, with the bit the device must ignore: SPLIT-DEV-11
            self._driver_run()  # reap first, so used_event names the next entry
            self._set_used_notifications(name, True)  # set before the kick: QEMU uses a buffer at once
            self._stray_no_interrupt(name, True)
            self._inflate_batch()
            self._device_run()
            self._stray_no_interrupt(name, False)
        self._inflate_batch()
        self._set_used_notifications(name, False)
        self._device_run()  # not owed: SPLIT-DEV-9, SPLIT-DEV-13
        self._inflate_batch()
        self._set_used_notifications(name, True)
        self._device_run()
        self._driver_run()
        note("inflateq: suppression toggled between batches and their use "
             f"({'with' if vq.event_idx else 'without'} EVENT_IDX)")
