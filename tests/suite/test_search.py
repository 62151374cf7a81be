"""A ci verdict does not depend on literal constants in the implementation's source."""

from __future__ import annotations

import importlib
import sys

import pytest

from conformance.search import pinned_constants, suite_constants


@pytest.fixture
def vendor_module(tmp_path):
    """What an unrelated edit to a vendor's implementation looks like: new literals in a local module."""
    (tmp_path / "vendor_consts_sample.py").write_text(
        "_UNUSED = 0xA5\n_MAGIC = 0x5A5A5A\nSIZES = (3, 7, 11, 4095, 65537, 123456789)\nNAME = 'vendor'\n")
    sys.path.insert(0, str(tmp_path))

    def load():
        importlib.import_module("vendor_consts_sample")

    yield load
    sys.path.remove(str(tmp_path))
    sys.modules.pop("vendor_consts_sample", None)


def test_the_pool_is_the_suites_own_and_ignores_new_local_modules(vendor_module):
    from hypothesis.internal.conjecture import providers

    pool = suite_constants()
    assert 4096 in pool.integers  # the protocol's own numbers are there
    with pinned_constants():
        vendor_module()
        assert providers._get_local_constants() is pool
        assert 0x5A5A5A not in providers._get_local_constants().integers


def test_without_the_pin_a_vendor_constant_would_enter_the_search(vendor_module):
    """Why the pin exists: Hypothesis mines every local module, the implementation's included."""
    from hypothesis.internal.conjecture import providers

    vendor_module()
    assert 0x5A5A5A in providers._get_local_constants().integers
