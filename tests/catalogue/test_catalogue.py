"""The catalogue loads, rejects malformed input with one line, and every ID the code cites exists."""

import re
from pathlib import Path

import pytest

from spec.catalogue import CatalogueError, catalogue, load

ROOT = Path(__file__).resolve().parents[2]
ID_RE = re.compile(r'"((?:SPLIT|PACKED|STATUS|FEAT|RESET|CFG|VQ|INIT|NOTIFY|RSV|BAL|SEED|PROP)-[A-Z0-9-]*[0-9])"')


def test_catalogue_is_well_formed():
    cat = catalogue()
    assert len(cat) > 150
    for r in cat.values():
        prefixes = ("seed",) if r.profile == "seed-2016" else ("sec", "drivernormative", "devicenormative")
        assert r.label.split(":")[0] in prefixes, r.id
        if not r.checkable:
            assert r.reason, r.id


def test_every_cited_id_exists():
    cited = set()
    for path in list((ROOT / "refmodel").rglob("*.py")) + list((ROOT / "tests").rglob("*.py")):
        cited |= set(ID_RE.findall(path.read_text()))
    cited.discard("NOPE-1")
    unknown = sorted(i for i in cited if i not in catalogue())
    assert not unknown, f"cited but not in the catalogue: {unknown}"


def test_labels_match_section_table():
    table = ROOT.parent / "shared" / "reference" / "virtio-1.4-section-numbers.txt"
    if not table.exists():
        pytest.skip("the shared reference folder is not next to this checkout")
    sections = {}
    for line in table.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            sections[parts[0]] = parts[2]
    # A proposal entry may sit in a normative section the patch series itself adds.
    added = set()
    for patch in (ROOT / "spec" / "proposal").glob("0*.patch"):
        for kind, title in re.findall(r"^\+\\(drivernormative|devicenormative)\{\\\w+\}\{[^}]*\}\{([^}]*)\}",
                                      patch.read_text(), re.M):
            added.add(f"{kind}:{title}")
    for r in catalogue().values():
        if r.profile == "proposal" and r.label in added:
            continue
        if r.profile in ("virtio-1.4", "proposal"):
            assert sections.get(r.section) == r.label, r.id


@pytest.mark.parametrize("text, msg", [
    ("not toml [", "not valid TOML"),
    ("x = 1", "no [[requirement]]"),
    ('[[requirement]]\nid = "A-1"', "A-1: missing field 'section'"),
    ('[[requirement]]\nid="A-1"\nsection="1"\nlabel="sec:x"\nrole="host"\nkeyword="MUST"\nfeatures=[]\n'
     'text="t"\ncheckable=true', "field 'role' must be one of"),
    ('[[requirement]]\nid="A-1"\nsection="1"\nlabel="sec:x"\nrole="driver"\nkeyword="MUST"\nfeatures=[]\n'
     'text="t"\ncheckable=false', "not checkable but no 'reason'"),
    ('[[requirement]]\nid="A-1"\nsection="1"\nlabel="sec:x"\nrole="driver"\nkeyword="MUST"\nfeatures=[]\n'
     'text="t"\ncheckable=true\ncolour="red"', "unknown field 'colour'"),
])
def test_malformed_catalogue_gives_one_line_error(tmp_path, text, msg):
    p = tmp_path / "cat.toml"
    p.write_text(text)
    with pytest.raises(CatalogueError, match=re.escape(msg)) as exc:
        load(p)
    assert "\n" not in str(exc.value)
