"""Conformance suite: Hypothesis state machines that check a device or a driver under test against
the reference model, with per-requirement verdicts. Entry points: the ``virtio-conformance`` CLI
(:mod:`conformance.cli`, also ``python -m conformance``; ``c-header`` and ``c-example`` give a C
implementation the installed ABI header and examples) and the pytest plugin
(:mod:`conformance.pytest_plugin`).
"""
