"""The traditional memory balloon device (§5.5): config, queues, each operation, the device and driver."""
