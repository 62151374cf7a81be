"""rust-vmm's virtio-queue crate (Cloud Hypervisor, virtiofsd, vhost-device) as a device-side split
virtqueue under test: Debian's packaged crates (:mod:`.provision`), a small C ABI shim over
``virtio_queue::Queue`` (``shim/``), and the ctypes adapter (:mod:`.adapter`)."""
