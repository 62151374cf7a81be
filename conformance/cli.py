"""``virtio-conformance``: list the implementations, run the suite, write reports.

Commands::

    virtio-conformance list                             # built-in implementations, mutants included
    virtio-conformance run --dut mydev:make --role device --known-deviations qemu --report r.json
    virtio-conformance c-header [--include-dir]          # the installed C ABI header (or its directory)
    virtio-conformance c-example device|driver [--output DIR]   # an example C implementation

``--dut module:factory`` imports from the current directory. ``--known-deviations`` takes a file or the
name of a list that ships with the suite (``qemu``). A C implementation builds against the header::

    cc -shared -fPIC -I"$(virtio-conformance c-header --include-dir)" -o libmydev.so mydev.c
    virtio-conformance run --dut c:./libmydev.so --role device

``run --dut reference`` checks the reference device and driver at the balloon level and their split
virtqueues at the virtqueue level, one merged table per role (each verdict names its level).
``run --level virtqueue --ring packed`` checks a packed virtqueue (§2.8) on the PACKED-* requirements
(``--dut reference``: the reference packed queues); the JSON report then names the ring (``"ring"``).
``run --ring packed`` at the balloon level runs every balloon feature over packed rings: the suite's driver
accepts VIRTIO_F_RING_PACKED (a device under test must offer it; the reference and the mutants then do,
``--dut qemu`` gets ``packed=on``) and the suite's device offers it to a driver under test (RSV-DRV-4);
the split ring's checks are then not-applicable, and the report names the ring.
``--profile soak --seed N`` is the long random search ``tools/soak`` runs for several seeds.

``run --proposal NAME`` (repeatable) also judges a proposal profile of issue 17 (``hint-wait-on-ack``,
``device-init-on-inflate``, ``device-init-reported``, ``stats-only``, ``bitmap-inflate-deflate``): the
suite's reference side offers or accepts the profile's feature bit and checks the profile's catalogue
entries, and ``--dut reference`` itself runs in that mode. A device or driver that does not offer or accept
the bit gets not-applicable for them. The JSON report names the profiles (``"proposals"``) and gives each
requirement its ``"profile"``. Two profiles on one feature bit (the three bit-6 proposals) are refused
(PROP-BIT-DEV-1), as is ``combined-inflate-deflate-vq`` (modelled, no reference queue yet)::

    virtio-conformance run --dut reference --proposal hint-wait-on-ack --report hwa.json
    virtio-conformance run --dut mutant-wait-on-ack-discards-after-use    # a profile's mutant selects it

Exit status: 0 when no requirement failed (known deviations excepted), 1 when one did or the
implementation crashed or hung, 2 for bad usage (an unknown profile, a negative seed, ...) or an
implementation that lacks a method of its role (a one-line message, never a traceback), 130 when
SIGINT or SIGTERM stopped the run: the table and the reports then hold the verdicts it reached, marked
interrupted (a second signal stops at once, without them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import NoReturn

from refmodel.balloon.proposals.bits import Proposal
from refmodel.balloon.proposals.reference import RUNNABLE
from spec.catalogue import CatalogueError, catalogue

from conformance.interface import InterfaceError
from conformance.known_deviations import KnownDeviations, parse as parse_known_deviations
from conformance.registry import BUILTIN, RINGS, DutError, resolve, ring_of, with_proposals
from conformance.report import print_table, write_json, write_junit
from conformance.interrupt import EXIT_INTERRUPTED, stop_on_signals
from conformance.profiles import PROFILES, ProfileError, check_seed, profile
from conformance.runner import RunResult, run_levels


#: Proposal profiles ``run --proposal`` takes (issue 17): those whose reference device and driver run.
PROPOSAL_NAMES = tuple(p.value for p in RUNNABLE)

#: Known-deviation lists that ship with the suite, by name: (package, resource).
KNOWN_DEVIATION_LISTS = {"qemu": ("conformance.adapters.qemu", "known_deviations.txt"),
                         "linux": ("conformance.adapters.linux", "known_deviations.txt")}

#: The C ABI header and the example implementations (package conformance.adapters.c).
C_PACKAGE = "conformance.adapters.c"
C_HEADER = "virtio_conformance.h"
C_EXAMPLES = {"device": "example_device.c", "driver": "example_driver.c"}


def _packaged(package: str, name: str) -> Path:
    """A file installed with the suite, as a path a compiler or ``open`` can use."""
    res = resources.files(package) / name
    if not isinstance(res, Path) or not res.is_file():  # a zipped install has no path to give
        raise DutError(f"{name}: not installed as a file in {package} (reinstall the wheel unzipped)")
    return res


def known_deviations_text(spec: str) -> str:
    """The text of ``spec``: the name of a packaged list, or a path."""
    if spec in KNOWN_DEVIATION_LISTS:
        return _packaged(*KNOWN_DEVIATION_LISTS[spec]).read_text(encoding="utf-8")
    try:
        return Path(spec).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DutError(f"--known-deviations {spec}: no such file, nor a list that ships with the suite "
                       f"(one of: {', '.join(KNOWN_DEVIATION_LISTS)})") from None
    except OSError as e:
        raise DutError(f"--known-deviations {spec}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise DutError(f"--known-deviations {spec}: not UTF-8 text (byte {e.start})") from None


def load_known_deviations(path: str | None) -> KnownDeviations:
    """One requirement ID per line, optionally scoped to some builds (``SPLIT-DEV-10  qemu>10.0``; the
    grammar: :mod:`conformance.known_deviations`); ``#`` starts a comment. Unknown IDs, components and
    malformed conditions are an error. ``path`` may also name a packaged list (:data:`KNOWN_DEVIATION_LISTS`).
    As a set, the result holds every ID the list names; the runner applies each entry only to the builds
    it names."""
    if path is None:
        return KnownDeviations()
    return parse_known_deviations(known_deviations_text(path), path)


#: Real implementations the suite starts itself (they need a binary, so they are not in BUILTIN).
EXTERNAL = (("qemu", "device", "QEMU's virtio-balloon-pci over qtest (--qemu-binary)"),
            ("linux", "driver", "Linux's virtio_balloon in a User-Mode Linux guest, over vhost-user (--uml-binary)"),
            ("linux-qemu", "driver", "Linux's virtio_balloon in a QEMU 11.1 TCG guest, over virtio-pci and "
             "vhost-user (--kernel)"),
            ("rust-vmm-virtio-queue-0.14", "device", "rust-vmm virtio-queue 0.14 (Debian trixie), --level virtqueue"),
            ("rust-vmm-virtio-queue-0.18", "device", "rust-vmm virtio-queue 0.18 (Debian sid), --level virtqueue"))


_EPILOG = """\
a Python implementation (mydev.py in the current directory, make(mem) returns a device):
  virtio-conformance run --dut mydev:make --role device --report report.json
a C implementation, built against the installed header:
  virtio-conformance c-example device --output .
  cc -shared -fPIC -I"$(virtio-conformance c-header --include-dir)" -o libexample.so example_device.c
  virtio-conformance run --dut c:./libexample.so --role device
"""


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line, as every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _seed_of(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise ProfileError(f"--seed {text!r}: expected a whole number >= 0") from None
    check_seed(seed)
    return seed


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="virtio-conformance", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        description="Check a virtio-balloon device or driver against the reference model.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="name the built-in implementations under test, mutants included")
    r = sub.add_parser("run", help="run the conformance suite")
    r.add_argument("--dut", default="reference", help="built-in name or module:factory (default: reference)")
    r.add_argument("--role", choices=("device", "driver"),
                   help="which side is under test (default: both, for the reference implementations)")
    r.add_argument("--level", default="balloon", choices=("balloon", "virtqueue"),
                   help="balloon: a whole device or driver; virtqueue: one split virtqueue implementation, "
                        "checked on the SPLIT-* requirements (default: balloon)")
    r.add_argument("--ring", choices=RINGS, default=None,
                   help="with --level virtqueue: split (SPLIT-*) or packed (PACKED-*, §2.8) virtqueue "
                        "(default: split, or a built-in's own); at the balloon level: the rings the run "
                        "negotiates (packed: VIRTIO_F_RING_PACKED)")
    r.add_argument("--profile", default="ci", metavar="PROFILE",
                   help=f"how long to search: one of {', '.join(PROFILES)} (default: ci)")
    r.add_argument("--proposal", action="append", default=[], metavar="NAME",
                   help="also judge a proposal profile (issue 17), repeatable: the suite's side offers or accepts "
                        f"its feature bit and checks its requirements; one of {', '.join(PROPOSAL_NAMES)}")
    r.add_argument("--seed", type=str, default=None,
                   help="force Hypothesis' seed (a whole number >= 0; the search is then random from it)")
    r.add_argument("--report", type=Path, help="write the JSON report here")
    r.add_argument("--junit", type=Path, help="write JUnit XML here")
    r.add_argument("--known-deviations",
                   help="file of requirement IDs whose failures do not fail the run, or the name of a list "
                        f"that ships with the suite ({', '.join(KNOWN_DEVIATION_LISTS)})")
    r.add_argument("--timeout", type=float, default=None,
                   help="seconds allowed per call into the implementation (default: 10; 90 for --dut linux)")
    r.add_argument("--max-failures", type=int, default=8, help="stop after this many distinct failures")
    r.add_argument("--qemu-binary", help="QEMU to test with --dut qemu (default: qemu-system-x86_64 on PATH)")
    r.add_argument("--uml-binary", help="User-Mode Linux kernel for --dut linux (default: /usr/bin/linux.uml)")
    r.add_argument("--kernel", help="Debian cloud kernel for --dut linux-qemu: bookworm (6.1, the default), trixie, "
                                    "sid, or a provisioned build's vmlinuz (QEMU: sid's, or --qemu-binary)")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    h = sub.add_parser("c-header", help="print the path of the C ABI header for --dut c:LIB.so",
                       description="Print the installed virtio_conformance.h, for a C implementation: "
                                   'cc -shared -fPIC -I"$(virtio-conformance c-header --include-dir)" ...')
    h.add_argument("--include-dir", action="store_true", help="print its directory instead (for cc -I)")
    e = sub.add_parser("c-example", help="print the path of an example C device or driver, or copy it",
                       description="An example C implementation of the ABI in virtio_conformance.h; its "
                                   "opening comment gives the cc line and the -DBROKEN_* variants that fail.")
    e.add_argument("role", choices=tuple(C_EXAMPLES))
    e.add_argument("--output", type=Path, metavar="DIR", help="copy it (and the header) into DIR")
    return p


def _c_files(args: argparse.Namespace) -> int:
    header = _packaged(C_PACKAGE, C_HEADER)
    if args.command == "c-header":
        print(header.parent if args.include_dir else header)
        return 0
    example = _packaged(C_PACKAGE, C_EXAMPLES[args.role])
    if args.output is None:
        print(example)
        return 0
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        for src in (example, header):  # the header beside it: cc finds "virtio_conformance.h" without -I
            shutil.copyfile(src, args.output / src.name)
    except OSError as err:
        raise DutError(f"--output {args.output}: {err.strerror}") from None
    print(args.output / example.name)
    return 0


def _targets(args: argparse.Namespace) -> list:
    if args.level == "virtqueue":
        roles = [args.role] if args.role else ["device", "driver"]
        if args.role is None and args.dut not in ("reference", "virtq-reference", "virtq-packed-reference"):
            known = [r for (n, r) in BUILTIN if n == args.dut]
            if not known:
                raise DutError(f"--dut {args.dut!r}: give --role device or --role driver")
            roles = known
        return [resolve(args.dut, r, level="virtqueue", ring=args.ring) for r in roles]
    if args.role is None:
        if args.dut != "reference":
            roles = [r for (n, r) in BUILTIN if n == args.dut]
            if not roles:
                if args.dut == "qemu":
                    return [resolve(args.dut, "device", qemu_binary=args.qemu_binary, ring=args.ring)]
                if args.dut == "linux":
                    return [resolve(args.dut, "driver", uml_binary=args.uml_binary, ring=args.ring)]
                if args.dut == "linux-qemu":
                    return [resolve(args.dut, "driver", qemu_binary=args.qemu_binary, kernel=args.kernel,
                                    ring=args.ring)]
                if ":" in args.dut:
                    raise DutError(f"--dut {args.dut!r}: give --role device or --role driver")
                raise DutError(f"--dut {args.dut!r}: no such implementation (see 'virtio-conformance list')")
            return [resolve(args.dut, roles[0], ring=args.ring)]
        return [resolve("reference", "device", ring=args.ring), resolve("reference", "driver", ring=args.ring)]
    return [resolve(args.dut, args.role, qemu_binary=args.qemu_binary, uml_binary=args.uml_binary, ring=args.ring,
                    kernel=args.kernel)]


def _proposed(args: argparse.Namespace, impls: list) -> list:
    """Each target under the --proposal profiles (a balloon-level run only)."""
    if not args.proposal:
        return impls
    if args.level != "balloon":
        raise DutError("--proposal needs --level balloon (a profile changes the balloon, not the virtqueue)")
    for name in args.proposal:
        if name not in PROPOSAL_NAMES and name not in {p.value for p in Proposal}:
            raise DutError(f"--proposal {name!r}: expected one of {', '.join(PROPOSAL_NAMES)}")
    return [with_proposals(impl, args.proposal) for impl in impls]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        catalogue()
        if args.command == "list":
            for (name, role), impl in sorted(BUILTIN.items(), key=lambda kv: (kv[0][0] != "reference", kv[0])):
                breaks = f"  [breaks {', '.join(impl.breaks)}]" if impl.breaks else ""
                print(f"{name:42} {role:7} {impl.description}{breaks}")
            for name, role, what in EXTERNAL:
                print(f"{name:42} {role:7} {what}")
            return 0
        if args.command in ("c-header", "c-example"):
            return _c_files(args)
        seed = None if args.seed is None else _seed_of(args.seed)
        profile(args.profile, seed)
        known = load_known_deviations(args.known_deviations)
        impls = _proposed(args, _targets(args))
        progress = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
        results: list[RunResult] = []
        with stop_on_signals():
            for impl in impls:
                results.append(run_levels(impl, args.profile, known_deviations=known, progress=progress,
                                          timeout=args.timeout, max_failures=args.max_failures, seed=seed))
                if results[-1].interrupted:
                    break  # the implementations not yet run are not in the report
    except (DutError, InterfaceError, CatalogueError, ProfileError) as e:
        print(f"virtio-conformance: error: {e}", file=sys.stderr)
        return 2
    print_table(results, sys.stdout)
    if args.report:
        write_json(results, args.report)
        _name_the_ring(args.report, results)
        print(f"JSON report: {args.report}")
    if args.junit:
        write_junit(results, args.junit)
        print(f"JUnit XML: {args.junit}")
    if any(r.interrupted for r in results):
        return EXIT_INTERRUPTED
    return 1 if any(r.failed for r in results) else 0


def _name_the_ring(path: Path, results: list[RunResult]) -> None:
    """A virtqueue-level report gains ``"ring": "split" | "packed"`` (a key added, as the JSON shape
    allows)."""
    rings = {ring_of(r.implementation) or (r.implementation.ring if r.implementation.ring != "split" else None)
             for r in results} - {None}
    if not rings:
        return
    report = json.loads(path.read_text(encoding="utf-8"))
    report["ring"] = "+".join(sorted(r for r in rings if r is not None))
    tmp = path.with_name(f".{path.name}.ring.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # whole or not at all, as write_json


if __name__ == "__main__":
    sys.exit(main())
