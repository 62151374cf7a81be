"""The balloon-level mutants, device and driver (their modules hold them)."""

from conformance.mutants.device import DEVICE_MUTANTS
from conformance.mutants.driver import DRIVER_MUTANTS

__all__ = ["DEVICE_MUTANTS", "DRIVER_MUTANTS"]
