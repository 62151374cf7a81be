"""The C ABI: a device or driver in a shared library that exports virtio_conformance.h."""
