"""The packed virtqueue (§2.8): layout and ring arithmetic, event suppression, driver side and device side."""
