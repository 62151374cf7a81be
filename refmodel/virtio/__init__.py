"""Generic virtio (§2–§4): features, device status, memory, configuration, transport, virtqueues."""
