"""The virtio-pci modern transport (§4.1), driven over qtest: PCI config cycles through ports
0xCF8/0xCFC, BAR4 assigned and enabled by us (no firmware does it), the four virtio capabilities
located by walking the capability list."""

from __future__ import annotations

import attrs

from conformance.adapters.qemu.qtest import QtestClient

PCI_VENDOR_VIRTIO = 0x1AF4
BALLOON_DEVICE_IDS = (0x1045, 0x1002)  # modern, transitional
BAR_BASE = 0xE000_0000  # inside q35's 32-bit PCI hole, below the IOAPIC
# §4.1.4 cfg_type
COMMON_CFG, NOTIFY_CFG, ISR_CFG, DEVICE_CFG = 1, 2, 3, 4
# §4.1.4.3 struct virtio_pci_common_cfg
DEVICE_FEATURE_SELECT, DEVICE_FEATURE, DRIVER_FEATURE_SELECT, DRIVER_FEATURE = 0x00, 0x04, 0x08, 0x0C
MSIX_CONFIG, NUM_QUEUES, DEVICE_STATUS, CONFIG_GENERATION = 0x10, 0x12, 0x14, 0x15
QUEUE_SELECT, QUEUE_SIZE, QUEUE_MSIX_VECTOR, QUEUE_ENABLE, QUEUE_NOTIFY_OFF = 0x16, 0x18, 0x1A, 0x1C, 0x1E
QUEUE_DESC, QUEUE_DRIVER, QUEUE_DEVICE = 0x20, 0x28, 0x30
NO_VECTOR = 0xFFFF
# MSI-X (PCI 3.0 §6.8.2): capability ID, message control bits, table entry layout
CAP_MSIX, MSIX_ENABLE, MSIX_FUNCTION_MASK = 0x11, 0x8000, 0x4000
MSIX_ENTRY_SIZE, MSIX_ENTRY_DATA, MSIX_ENTRY_CTRL = 16, 8, 12
MSIX_BAR_BASE = BAR_BASE + 0x10_0000  # the table's BAR, above BAR4


class PciError(RuntimeError):
    """The device is missing or its virtio capabilities are malformed."""


@attrs.frozen
class VirtioCaps:
    common: int
    notify: int
    notify_multiplier: int
    isr: int
    device: int
    msix: Msix | None = None  # None: no MSI-X capability (QEMU 7.2's balloon), interrupts are INTx/ISR


@attrs.frozen
class Msix:
    """A function's MSI-X table, mapped and enabled. Each vector writes its data word into guest RAM
    (as QEMU's libqos programs it), so which vectors fired is read from memory, not from an IRQ line."""

    cfg: PciConfig
    cap: int  # config-space offset of the capability
    table: int  # guest-physical address of entry 0
    entries: int

    def enable(self) -> None:
        """Map the table's BAR and enable MSI-X (INTx goes quiet), every vector masked by the function."""
        self.cfg.write32(0x10 + 4 * (self.cfg.read32(self.cap + 4) & 7), MSIX_BAR_BASE)
        self.mask_all(True)

    def program(self, qt: QtestClient, area: int) -> None:
        """Vector v writes ``v + 1`` to ``area + 4 v``; every vector unmasked."""
        for v in range(self.entries):
            entry = self.table + MSIX_ENTRY_SIZE * v
            qt.writel(entry, (area + 4 * v) & 0xFFFFFFFF)
            qt.writel(entry + 4, (area + 4 * v) >> 32)
            qt.writel(entry + MSIX_ENTRY_DATA, v + 1)
            qt.writel(entry + MSIX_ENTRY_CTRL, 0)

    def mask_all(self, on: bool) -> None:
        """Function Mask: while set, a vector that fires is only marked pending; clearing it delivers."""
        ctrl = self.cfg.read16(self.cap + 2) & ~MSIX_FUNCTION_MASK
        self.cfg.write16(self.cap + 2, ctrl | MSIX_ENABLE | (MSIX_FUNCTION_MASK if on else 0))


class PciConfig:
    def __init__(self, qt: QtestClient, dev: int, bus: int = 0, fn: int = 0) -> None:
        self.qt, self.base = qt, 0x8000_0000 | bus << 16 | dev << 11 | fn << 8

    def read32(self, off: int) -> int:
        self.qt.outl(0xCF8, self.base | off & 0xFC)
        return self.qt.inl(0xCFC)

    def read8(self, off: int) -> int:
        return self.read32(off) >> 8 * (off & 3) & 0xFF

    def read16(self, off: int) -> int:
        return self.read32(off) >> 8 * (off & 2) & 0xFFFF

    def write32(self, off: int, value: int) -> None:
        self.qt.outl(0xCF8, self.base | off & 0xFC)
        self.qt.outl(0xCFC, value)

    def write16(self, off: int, value: int) -> None:
        self.qt.outl(0xCF8, self.base | off & 0xFC)
        self.qt.outw(0xCFC + (off & 2), value)


def find_balloon(qt: QtestClient) -> PciConfig:
    for dev in range(32):
        cfg = PciConfig(qt, dev)
        ident = cfg.read32(0)
        if ident & 0xFFFF == PCI_VENDOR_VIRTIO and ident >> 16 in BALLOON_DEVICE_IDS:
            return cfg
    raise PciError("no virtio-balloon PCI function on bus 0")


def setup(cfg: PciConfig) -> VirtioCaps:
    """Assign BAR4 (64-bit memory), enable memory decoding and bus mastering, locate the caps."""
    cfg.write32(0x20, BAR_BASE)  # BAR4 low
    cfg.write32(0x24, 0)  # BAR5: high half of the 64-bit BAR4
    cfg.write16(0x04, cfg.read16(0x04) | 0x6)  # memory space + bus master
    if not cfg.read16(0x06) & 0x10:
        raise PciError("no PCI capability list")
    found: dict[int, tuple[int, int]] = {}
    multiplier, msix_cap = 0, 0
    ptr, seen = cfg.read8(0x34) & 0xFC, 0
    while ptr and seen < 48:
        seen += 1
        if cfg.read8(ptr) == CAP_MSIX:
            msix_cap = ptr
        if cfg.read8(ptr) == 0x09:  # vendor-specific: struct virtio_pci_cap
            cfg_type, bar, offset = cfg.read8(ptr + 3), cfg.read8(ptr + 4), cfg.read32(ptr + 8)
            if bar == 4 and cfg_type in (COMMON_CFG, NOTIFY_CFG, ISR_CFG, DEVICE_CFG) and cfg_type not in found:
                found[cfg_type] = (bar, offset)
                if cfg_type == NOTIFY_CFG:
                    multiplier = cfg.read32(ptr + 16)
        ptr = cfg.read8(ptr + 1) & 0xFC
    missing = {COMMON_CFG, NOTIFY_CFG, ISR_CFG, DEVICE_CFG} - set(found)
    if missing:
        raise PciError(f"virtio capabilities {sorted(missing)} not found in BAR4")
    return VirtioCaps(BAR_BASE + found[COMMON_CFG][1], BAR_BASE + found[NOTIFY_CFG][1], multiplier,
                      BAR_BASE + found[ISR_CFG][1], BAR_BASE + found[DEVICE_CFG][1],
                      _find_msix(cfg, msix_cap) if msix_cap else None)


def _find_msix(cfg: PciConfig, cap: int) -> Msix | None:
    """The MSI-X table, where it sits in a 32-bit memory BAR other than BAR4 (None elsewhere). Not
    mapped or enabled here: :meth:`Msix.enable` does that, for a user that reads vectors."""
    table = cfg.read32(cap + 4)
    bir = table & 7
    if bir >= 4 or cfg.read32(0x10 + 4 * bir) & 0x7:
        return None
    return Msix(cfg, cap, MSIX_BAR_BASE + (table & ~7), (cfg.read16(cap + 2) & 0x7FF) + 1)
