import pickle

import pytest

from refmodel.errors import BrokenSide, LocalSpecViolation, PeerSpecViolation, SpecViolation, Sticky, guarded
from spec.catalogue import CatalogueError


def test_spec_violation_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        SpecViolation("SPLIT-DRV-4")


def test_violation_carries_catalogue_entry():
    e = PeerSpecViolation("BAL-FPH-DEV-2", "id 7 reused")
    assert (e.req_id, e.section, e.role) == ("BAL-FPH-DEV-2", "5.5.6.5.2", "device")
    assert "MUST NOT" in str(e) and "id 7 reused" in str(e) and e.paraphrase in str(e)
    assert pickle.loads(pickle.dumps(e)).req_id == "BAL-FPH-DEV-2"


def test_unknown_id_is_a_catalogue_error():
    with pytest.raises(CatalogueError, match="NOPE-1"):
        LocalSpecViolation("NOPE-1")


def test_side_stays_broken():
    class Side(Sticky):
        @guarded
        def step(self, bad):
            if bad:
                raise PeerSpecViolation("SPLIT-DRV-2")
            return "ok"

    s = Side()
    assert s.step(False) == "ok"
    with pytest.raises(PeerSpecViolation):
        s.step(True)
    with pytest.raises(BrokenSide) as exc:
        s.step(False)
    assert exc.value.cause.req_id == "SPLIT-DRV-2"
