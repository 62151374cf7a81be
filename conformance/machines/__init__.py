"""Hypothesis state machines: a device or driver under test checked against the model."""
