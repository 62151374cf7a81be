"""A device under test in a few lines: the reference device, as a VMM that cannot say which pages it
would leave out of a migration (no ``hinted_pages()``).

    virtio-conformance run --dut mydevice:make --role device
"""

from refmodel.balloon.device import BalloonDevice
from refmodel.capabilities import Capability
from refmodel.virtio.memory import GuestMemory


class MyDevice(BalloonDevice):
    # Every capability of the reference but one: the checks that need it are reported skipped.
    capabilities = BalloonDevice.capabilities - {Capability.HINTED_PAGES}


def make(mem: GuestMemory) -> MyDevice:
    """The factory: the suite calls it with the guest memory it shares with the reference driver."""
    return MyDevice(mem)
