"""The PACKED catalogue entries and the packed model agree: every ID the model or its tests cite exists,
every checkable one is applied by the model or verified by a test (or says here why not yet), and every
AMB-PACKED choice is applied somewhere in the model."""

import re
from pathlib import Path

from refmodel.ambiguities import BY_ID
from spec.catalogue import catalogue

ROOT = Path(__file__).resolve().parents[2]
MODEL = sorted((ROOT / "refmodel" / "virtio" / "packed").glob("*.py"))
TESTS = sorted((ROOT / "tests" / "virtio").glob("test_packed_*.py"))
ID_RE = re.compile(r"\bPACKED-(?:DRV|DEV)-D?\d+\b")
AMB_RE = re.compile(r"\bAMB-PACKED-[A-Z-]+\b")

#: Checkable requirements the packed model does not apply yet, and why.
NOT_IN_MODEL = {
    "PACKED-DRV-3": "a change after AVAIL is a change before USED too: the device's check names PACKED-DRV-2",
    "PACKED-DRV-6": "no device here sets a list limit below the Queue Size, which PACKED-DRV-7 checks",
}


def _text(paths):
    return "".join(p.read_text() for p in paths)


def test_every_cited_packed_id_exists():
    cited = set(ID_RE.findall(_text(MODEL + TESTS + [ROOT / "refmodel" / "ambiguities.py"])))
    assert cited, "the regex found nothing"
    assert sorted(cited - set(catalogue())) == []


def test_every_checkable_packed_requirement_is_applied_or_explained():
    cat = catalogue()
    packed = {i: r for i, r in cat.items() if i.startswith("PACKED-")}
    assert len(packed) > 50
    cited = set(ID_RE.findall(_text(MODEL + TESTS)))
    missing = sorted(i for i, r in packed.items() if r.checkable and i not in cited and i not in NOT_IN_MODEL)
    assert missing == []
    for i, why in NOT_IN_MODEL.items():
        assert packed[i].checkable and why and i not in set(ID_RE.findall(_text(MODEL))), i
    for r in packed.values():
        assert "VIRTIO_F_RING_PACKED" in r.features, r.id
        assert r.role == ("driver" if "-DRV-" in r.id else "device"), r.id
        assert r.id.split("-")[2].startswith("D") == bool(r.derived), r.id


def test_every_packed_ambiguity_is_applied_in_the_model():
    ids = {i for i in BY_ID if i.startswith("AMB-PACKED-")}
    assert ids and ids <= set(AMB_RE.findall(_text(MODEL)))
    assert set(AMB_RE.findall(_text(MODEL + TESTS))) <= set(BY_ID)
