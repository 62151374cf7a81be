import os

import pytest
from hypothesis import HealthCheck, Phase, settings

import scheduling
from spec.catalogue import CatalogueError, requirement

# The tests' own Hypothesis profiles; "tests" (not "ci") so it is not taken for the suite's --profile ci.
# No explain phase: the tests that expect a failure judge its trace, and explaining it took 60 of the
# hinting-invariant tests' 82 s.
_NO_EXPLAIN = [p for p in Phase if p.name != "explain"]
settings.register_profile("dev", max_examples=60, deadline=None, phases=_NO_EXPLAIN)
settings.register_profile("tests", settings.get_profile("ci"), max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], phases=_NO_EXPLAIN)
settings.register_profile("nightly", max_examples=1000, deadline=None, phases=_NO_EXPLAIN)
settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "tests" if os.getenv("CI") else "dev"))


def pytest_configure(config):
    scheduling.configure(config)
    config.addinivalue_line("markers", "verifies(*ids): the catalogue requirements this test checks")
    config.addinivalue_line("markers", "soak: long runs of the reference pair; skipped unless VIRTIO_SOAK=1 "
                                       "(tools/soak runs them)")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") == "loadgroup":  # what tools/test asks for
        return scheduling.make_scheduler(config, log)
    return None


def pytest_collection_modifyitems(items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        scheduling.order_for_workers(items)
    for item in items:
        for mark in item.iter_markers("verifies"):
            for req_id in mark.args:
                try:
                    requirement(req_id)
                except CatalogueError as e:
                    raise pytest.UsageError(f"{item.nodeid}: {e}") from None
            item.user_properties.append(("verifies", ",".join(mark.args)))
