import os

import pytest

import suite_mutant_runs


@pytest.fixture(scope="session", autouse=True)
def _share_mutant_runs(tmp_path_factory: pytest.TempPathFactory):
    """Under pytest-xdist, the workers' base directories share a parent: the mutant runs are kept there."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        suite_mutant_runs.SHARED = tmp_path_factory.getbasetemp().parent / "mutant-runs"
    yield
