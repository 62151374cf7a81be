"""The build matrix: the device suite against every QEMU build Debian ships, the driver suite against every
Linux build on the UML route and on the QEMU-guest route (Debian's cloud kernels), and rust-vmm's virtio-queue at the virtqueue level. One test per build, so
``pytest -n 2`` spreads them over cores (``tools/matrix``); each writes ``results/matrix/BUILD.json``.

Not part of the default run: it takes many minutes. ``VIRTIO_MATRIX=1`` enables it; ``VIRTIO_MATRIX_PROFILE``
picks the profile (nightly for committed results).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conformance.cli import load_known_deviations
from conformance.registry import resolve
from conformance.report import to_json
from conformance.runner import run

RESULTS = Path(__file__).resolve().parents[2] / "results" / "matrix"
PROFILE = os.environ.get("VIRTIO_MATRIX_PROFILE", "nightly")

pytestmark = pytest.mark.skipif(os.environ.get("VIRTIO_MATRIX") != "1", reason="the matrix runs with tools/matrix")

#: (result name, dut, role, level, QEMU build, UML build, known deviations)
BUILDS = [
    ("qemu-bookworm", "qemu", "device", "balloon", "bookworm", None, "qemu"),
    ("qemu-bookworm-backports", "qemu", "device", "balloon", "bookworm-backports", None, "qemu"),
    ("qemu-trixie", "qemu", "device", "balloon", "trixie", None, "qemu"),
    ("qemu-sid", "qemu", "device", "balloon", "sid", None, "qemu"),
    ("linux-uml-bookworm", "linux", "driver", "balloon", None, "bookworm", None),
    ("linux-uml-trixie", "linux", "driver", "balloon", None, "trixie", None),
    ("linux-uml-sid", "linux", "driver", "balloon", None, "sid", None),
    # The QEMU-guest route: the UML column names the cloud kernel (6.1, 6.12, 7.2); QEMU is sid's.
    ("linux-qemu-bookworm", "linux-qemu", "driver", "balloon", None, "bookworm", "linux"),
    ("linux-qemu-trixie", "linux-qemu", "driver", "balloon", None, "trixie", "linux"),
    ("linux-qemu-sid", "linux-qemu", "driver", "balloon", None, "sid", "linux"),
    # The same over packed rings (--ring packed): a name ending in -packed asks for them.
    ("linux-qemu-trixie-packed", "linux-qemu", "driver", "balloon", None, "trixie", "linux"),
    ("linux-qemu-sid-packed", "linux-qemu", "driver", "balloon", None, "sid", "linux"),
    ("rust-vmm-virtio-queue-0.14", "rust-vmm-virtio-queue-0.14", "device", "virtqueue", None, None, None),
    ("rust-vmm-virtio-queue-0.18", "rust-vmm-virtio-queue-0.18", "device", "virtqueue", None, None, None),
]


def _qemu_binary(release: str | None) -> str | None:
    if release is None:
        return None
    from conformance.provision import Kind, provision

    return str(provision(release, Kind.QEMU).binary)


@pytest.mark.parametrize("name, dut, role, level, qemu, uml, known", BUILDS, ids=[b[0] for b in BUILDS])
def test_build(name, dut, role, level, qemu, uml, known):
    builds = {"kernel": uml} if dut == "linux-qemu" else {"uml_binary": uml}
    ring = "packed" if name.endswith("-packed") else None
    impl = resolve(dut, role, qemu_binary=_qemu_binary(qemu), level=level, ring=ring, **builds)
    result = run(impl, PROFILE, known_deviations=load_known_deviations(known))
    report = to_json([result])
    report["matrix"] = {"build": name, "profile": PROFILE, "level": level, "ring": ring or "split"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / f".{name}.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    tmp.replace(RESULTS / f"{name}.json")
    errors = [e for e in result.errors if e.kind != "nondeterministic"]
    assert not errors, f"{name}: {len(errors)} error(s): {errors[0]}"
