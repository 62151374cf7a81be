"""Run the standalone reproducers in ``shim/examples/`` against the packaged virtio-queue versions.

``python -m conformance.adapters.rust_vmm.reproduce [0.14|0.18 ...]``: each example uses virtio-queue and
vm-memory only (no shim, no suite), and exits 1 when the deviation it shows is there. Exit status: 1 if
any reproduced, 0 if none did, 2 if one could not be built.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conformance.adapters.rust_vmm.provision import (CARGO_TIMEOUT, RELEASES, ProvisionError, _cargo, build_dir,
                                                     release, shim_library)

#: example name -> the requirement it shows broken.
REPRODUCERS = {"no_interrupt": "SPLIT-DEV-9"}


def reproduce(version: str, example: str) -> tuple[bool, str]:
    """(whether the deviation showed, the example's output) for virtio-queue ``version``."""
    rel = release(version)
    shim_library(version)  # provisions the crates and lays out the build directory
    project = build_dir(rel)
    env = {**os.environ, "VQ_CRATE_VERSION": rel.crate, "CARGO_TARGET_DIR": str(project / "target")}
    try:
        out = subprocess.run([_cargo(), "run", "--quiet", "--release", "--offline", "--example", example],
                             cwd=project, env=env, capture_output=True, text=True, timeout=CARGO_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ProvisionError(f"{rel.name}: example {example}: no result within {CARGO_TIMEOUT} s") from None
    if out.returncode not in (0, 1) or not out.stdout:
        lines = (out.stderr or "no output").strip().splitlines()
        raise ProvisionError(f"{rel.name}: example {example} failed: {lines[-1] if lines else 'no output'}")
    return out.returncode == 1, out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    versions = (argv if argv is not None else sys.argv[1:]) or list(RELEASES)
    shown = False
    for version in versions:
        for example, req in REPRODUCERS.items():
            try:
                hit, text = reproduce(version, example)
            except ProvisionError as e:
                print(f"reproduce: error: {e}", file=sys.stderr)
                return 2
            print(f"[{req}] {example}, virtio-queue {RELEASES[version].crate}: {'REPRODUCED' if hit else 'not seen'}")
            print("    " + text.replace("\n", "\n    "))
            shown |= hit
    return 1 if shown else 0


if __name__ == "__main__":
    sys.exit(main())
