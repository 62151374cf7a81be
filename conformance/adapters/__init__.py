"""Adapters that reach real implementations: C ABI, QEMU, Linux, vhost-user."""
