"""Conformance suite: Hypothesis state machines that check a device or a driver under test against
the reference model, with per-requirement verdicts. Entry points: the ``virtio-conformance`` CLI
(:mod:`conformance.cli`) and the pytest plugin (:mod:`conformance.pytest_plugin`).
"""
