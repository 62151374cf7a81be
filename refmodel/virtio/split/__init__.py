"""The split virtqueue (§2.7): byte layout, driver side and device side."""
