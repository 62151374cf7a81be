"""Known-deviation lists: a line may name the builds it applies to (``SPLIT-DEV-10  qemu>10.0``), a bare ID
applies to every build, and bad input is one line naming the file, the line and the field."""

import re

import pytest

from conformance.cli import load_known_deviations, main
from conformance.known_deviations import KnownDeviations, parse, resolve
from conformance.registry import DutError

QEMU_7_2 = "QEMU 7.2.22 Debian 1:7.2+dfsg-7+deb12u18+b3"
QEMU_10_0_2 = "QEMU 10.0.2 Debian 1:10.0.2+ds-2+deb13u1~bpo12+1"
QEMU_10_0_13 = "QEMU 10.0.13 Debian 1:10.0.13+ds-0+deb13u1"
QEMU_10_1 = "QEMU 10.1.0"
QEMU_11_1 = "QEMU 11.1.3 Debian 1:11.1.3+ds-1"
LINUX_QEMU = ("Linux 6.12.117+deb13-cloud-amd64 virtio_balloon (route qemu-guest: Debian cloud kernel "
              "6.12.117 under QEMU 11.1.3 TCG, vhost-user-test-device-pci)")
REFERENCE = "the reference device (refmodel.balloon.device)"


def test_a_bare_id_applies_to_every_build():
    known = parse("# a comment\n\nBAL-FPH-D5   # reason\n             # more reason\nSPLIT-DRV-1\n", "k.txt")
    assert known == {"BAL-FPH-D5", "SPLIT-DRV-1"} and hash(known) == hash(frozenset(known))
    assert [(e.req_id, e.conditions, e.line, e.scope) for e in known.entries] == [
        ("BAL-FPH-D5", (), 3, "every build"), ("SPLIT-DRV-1", (), 5, "every build")]
    for versions in (QEMU_7_2, QEMU_11_1, LINUX_QEMU, REFERENCE):
        assert set(known.applying(versions)) == {"BAL-FPH-D5", "SPLIT-DRV-1"}


@pytest.mark.parametrize("scope, applies", [
    # A bound with fewer parts than the build's version names a series.
    ("qemu==7.2", {QEMU_7_2}),
    ("qemu<=7.2", {QEMU_7_2}),
    ("qemu<8", {QEMU_7_2}),
    ("qemu>10.0", {QEMU_10_1, QEMU_11_1, LINUX_QEMU}),  # linux-qemu's versions name the QEMU serving it
    ("qemu>10.0.2", {QEMU_10_0_13, QEMU_10_1, QEMU_11_1, LINUX_QEMU}),
    ("qemu>=10.0.2", {QEMU_10_0_2, QEMU_10_0_13, QEMU_10_1, QEMU_11_1, LINUX_QEMU}),
    ("qemu!=10.0", {QEMU_7_2, QEMU_10_1, QEMU_11_1, LINUX_QEMU}),
    ("qemu>=10 qemu<11", {QEMU_10_0_2, QEMU_10_0_13, QEMU_10_1}),  # every condition must hold
    ("qemu >= 10.1", {QEMU_10_1, QEMU_11_1, LINUX_QEMU}),  # spaces around the operator
    ("QEMU>=11", {QEMU_11_1, LINUX_QEMU}),
    ("linux>=6.12", {LINUX_QEMU}),
    ("linux<6.12", set()),
])
def test_a_scoped_entry_applies_to_the_builds_it_names(scope, applies):
    known = parse(f"SPLIT-DEV-10\t{scope}  # reason\n", "k.txt")
    assert known == {"SPLIT-DEV-10"}
    builds = {QEMU_7_2, QEMU_10_0_2, QEMU_10_0_13, QEMU_10_1, QEMU_11_1, LINUX_QEMU, REFERENCE}
    assert {b for b in builds if known.applying(b)} == applies
    for b in builds - applies:  # outside its scope the entry accepts nothing
        assert known.applying(b) == {} and [e.req_id for e in known.not_applying(b)] == ["SPLIT-DEV-10"]


def test_several_lines_for_one_id_add_up_and_the_first_that_applies_accepts():
    known = parse("PACKED-DEV-7 qemu==7.2\nPACKED-DEV-7 qemu>=11\n", "k.txt")
    assert len(known) == 1
    assert known.applying(QEMU_7_2)["PACKED-DEV-7"].line == 1
    assert known.applying(QEMU_11_1)["PACKED-DEV-7"].line == 2
    assert known.applying(QEMU_10_0_2) == {}
    assert known.applying(QEMU_11_1)["PACKED-DEV-7"].to_json() == {"file": "k.txt", "line": 2,
                                                                    "applies_to": ["qemu>=11"]}


def test_a_plain_set_of_ids_applies_to_every_build():
    assert resolve(frozenset({"BAL-FPH-D5"}), QEMU_7_2) == {"BAL-FPH-D5": None}
    assert resolve(KnownDeviations(), QEMU_7_2) == {}


@pytest.mark.parametrize("line, field", [
    ("NOPE-1", "unknown requirement 'NOPE-1'"),
    ("SPLIT-DEV-10>10.0", "unknown requirement 'SPLIT-DEV-10>10.0'"),
    ("SPLIT-DEV-10 xen>4", "'xen>4': unknown component 'xen' (one of: linux, qemu)"),
    ("SPLIT-DEV-10 qemu>10..2", "'qemu>10..2': version '10..2' is not whole numbers joined by dots"),
    ("SPLIT-DEV-10 qemu>ten", "'qemu>ten': version 'ten' is not"),
    ("SPLIT-DEV-10 qemu>10.0-rc1", "version '10.0-rc1' is not"),
    ("SPLIT-DEV-10 qemu>" + "9" * 5000, "is not whole numbers"),  # no int() of a 5000-digit string
    ("SPLIT-DEV-10 qemu>\u0663", "is not whole numbers"),  # an Arabic-Indic digit is not a release number
    ("SPLIT-DEV-10 qemu", "'qemu': not a condition COMPONENT OP VERSION"),
    ("SPLIT-DEV-10 >=10", "'>=10': not a condition"),
    ("SPLIT-DEV-10 qemu=>10", "'qemu=>10': not a condition"),
    ("SPLIT-DEV-10 qemu>=10.1 qemu", "'qemu': not a condition"),
])
def test_a_bad_line_is_one_error_naming_file_line_and_field(line, field):
    with pytest.raises(DutError) as exc:
        parse(f"# header\nBAL-FPH-D5\n{line}  # reason\n", "known.txt")
    message = str(exc.value)
    assert message.startswith("--known-deviations known.txt:3: ") and field in message, message
    assert "\n" not in message


def test_a_bad_scope_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "k.txt"
    bad.write_text("BAL-FPH-D5  qemu>=10.x\n")
    assert main(["run", "--dut", "reference", "--role", "device", "--known-deviations", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(rf"{re.escape(str(bad))}:1: 'qemu>=10.x': version", err), err


def test_the_packaged_lists_parse():
    assert "INIT-DRV-5" in load_known_deviations("linux")
    assert all(not e.conditions for e in load_known_deviations("linux").entries)
    assert load_known_deviations(None) == frozenset()
