"""Run one target under atheris: ``python -m fuzz.run TARGET [libFuzzer flags] [corpus dirs]``.

The code under test is instrumented for coverage. A finding does not stop the run: it is counted and
its first inputs saved (``--findings DIR``), so a run of N inputs reports how many of them misbehaved.
The first are printed; the running count is kept in ``DIR/count`` (rewritten on each finding, since
libFuzzer exits without running Python's exit handlers).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys

import atheris

KEEP = 20  # inputs saved per run
#: Per target module, what is instrumented for coverage: the parsers under test, not the whole suite
#: (instrumentation costs each line run, so the rest would only slow the run). Not the standard library:
#: atheris 2.3 breaks tomllib's ``with`` blocks on 3.11.
INSTRUMENT = {
    "rings": ["refmodel.virtio"],
    "balloon": ["refmodel.balloon", "refmodel.virtio.virtq"],
    "vhost_user": ["conformance.adapters.vhost_user.protocol"],
    "qemu": ["conformance.adapters.qemu.qtest", "conformance.adapters.qemu.qmp", "qemu.qmp.message",
             "qemu.qmp.models"],
    "c_adapter": ["conformance.adapters.c.adapter"],
    "loaders": ["spec.catalogue", "conformance.cli", "conformance.known_deviations"],
}


def module_of(name: str) -> str:
    """The :mod:`fuzz` module defining target ``name``."""
    for prefix, module in (("split_", "rings"), ("packed_", "rings"), ("vhost_user_", "vhost_user"),
                           ("qtest_", "qemu"), ("qmp_", "qemu"), ("c_", "c_adapter"),
                           ("catalogue", "loaders"), ("known_deviations", "loaders")):
        if name.startswith(prefix):
            return module
    return "balloon"


def main(argv: list[str]) -> None:
    name, rest = argv[1], argv[2:]
    findings_dir = None
    if "--findings" in rest:
        i = rest.index("--findings")
        findings_dir = rest[i + 1]
        del rest[i:i + 2]
    module = module_of(name)
    with atheris.instrument_imports(include=INSTRUMENT[module]):
        targets = importlib.import_module(f"fuzz.{module}").TARGETS
    from fuzz.harness import Finding
    target = targets[name]
    seen: dict[str, int] = {"n": 0}

    count_fd = -1
    if findings_dir:
        os.makedirs(findings_dir, exist_ok=True)
        count_fd = os.open(os.path.join(findings_dir, "count"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def one(data: bytes) -> None:
        try:
            target(data)
        except Finding as e:
            seen["n"] += 1
            if count_fd >= 0:
                os.pwrite(count_fd, f"{seen['n']:>12}\n".encode(), 0)
            if seen["n"] <= KEEP:
                print(f"FINDING {name}: {e}"[:300], file=sys.stderr, flush=True)
                if findings_dir:
                    with open(os.path.join(findings_dir, hashlib.sha1(data).hexdigest()), "wb") as f:
                        f.write(data)

    atheris.Setup([sys.argv[0], *rest], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
