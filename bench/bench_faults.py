"""Faults injected at random steps (conformance.faults): how many the suite survives.

Each point kills or stops the implementation under test at a random call of every example: the example
C device segfaults or hangs, QEMU gets SIGKILL or SIGSTOP, the Linux guest's process group gets them on
either route (the UML guest, or the guest QEMU of the QEMU-guest route: TCG, Debian's cloud kernel), or
the vhost-user connection is cut in the middle of a message. Survived means: the run reported an error (or a
requirement's failure) naming the call and a counterexample naming the rule, went on to the next point,
and left no process, no temporary file or socket, and no guest RAM file in /dev/shm.

The points run in a worker started in a session of its own, with its TMPDIR in a fresh directory; this
process is a child subreaper, so whatever the worker leaves (even a QEMU in a session of its own) comes
back here. After the worker: its process group must be empty, no process left, the directory empty, and
no guest RAM file of the worker's left in /dev/shm.

Use: bench_faults.py [--points N] [--seed S] [--kinds c-segv,c-hang,qemu-kill,qemu-stop,uml-kill,uml-stop,
                                                lq-kill,lq-stop,vhost-cut]
(default: all kinds; lq-* boot a TCG guest per example: about half a minute a kill, 4-5 minutes a stop)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.faults import CALLS, KINDS, FaultPoint, become_subreaper, build_c_device, live_children, \
    run_point  # noqa: E402

#: Shares of the points per kind: the C faults are cheap, a guest's boot is not.
SHARES = {"c-segv": 60, "c-hang": 10, "qemu-kill": 10, "qemu-stop": 6, "uml-kill": 5, "uml-stop": 4,
          "lq-kill": 3, "lq-stop": 2, "vhost-cut": 5}


def draw(points: int, seed: int, kinds: list[str]) -> list[FaultPoint]:
    """``points`` points, each kind in its share (at least one of each when there are enough points)."""
    rng = random.Random(seed)
    total = sum(SHARES[k] for k in kinds)
    counts = {k: max(1 if points >= len(kinds) else 0, round(points * SHARES[k] / total)) for k in kinds}
    while sum(counts.values()) > points:
        counts[max(counts, key=counts.__getitem__)] -= 1
    while sum(counts.values()) < points:
        counts[kinds[0]] += 1
    return [FaultPoint(k, rng.randint(1, CALLS[k])) for k in kinds for _ in range(counts[k])]


def worker(points: list[FaultPoint], workdir: str, out: str) -> None:
    become_subreaper()
    with open(out, "a") as f:
        for p in points:
            o = run_point(p, workdir)
            f.write(json.dumps({"point": str(p), "survived": o.survived, "why": o.why, "step": o.step,
                                "rule": o.rule, "seconds": round(o.seconds, 2)}) + "\n")
            f.flush()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=8, help="fault points (the nightly figure is 100)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    ap.add_argument("--worker", nargs=3, metavar=("POINTS", "WORKDIR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec, workdir, out = args.worker
        worker([FaultPoint(k, int(n)) for k, n in (s.split("@") for s in spec.split(","))], workdir, out)
        return
    kinds = [k for k in args.kinds.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        sys.exit(f"--kinds: unknown {', '.join(bad)}; expected some of {', '.join(KINDS)}")
    points = draw(args.points, args.seed, kinds)
    become_subreaper()
    base = tempfile.mkdtemp(prefix="bench-faults-")
    workdir, out = os.path.join(base, "work"), os.path.join(base, "outcomes.jsonl")
    os.mkdir(workdir)
    if any(p.kind.startswith("c-") for p in points):
        build_c_device(workdir)  # once, outside the points' temporary directories
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--worker", ",".join(map(str, points)), workdir, out],
                            start_new_session=True, env=dict(os.environ, TMPDIR=workdir))
    proc.wait()
    wall = time.monotonic() - start
    group_left = group_alive(proc.pid)
    left = live_children()
    files = sorted(p.name for p in Path(workdir).iterdir() if p.name != "libexample_fault.so")
    files += sorted(str(p) for p in Path("/dev/shm").glob(f"vc-ram-{proc.pid}-*"))  # the worker's guest RAM
    results = [json.loads(line) for line in Path(out).read_text().splitlines()] if os.path.exists(out) else []
    shutil.rmtree(base, ignore_errors=True)

    print(f"{'point':16} {'ok':3} {'s':>6}  step / rule / what")
    for r in results:
        mark = "yes" if r["survived"] else "NO"
        print(f"{r['point']:16} {mark:3} {r['seconds']:6.1f}  {r['step']} / {r['rule']} / {r['why'][:150]}")
    by_kind: dict[str, list[int]] = {}
    for r in results:
        by_kind.setdefault(r["point"].split("@")[0], []).append(int(r["survived"]))
    for k, v in by_kind.items():
        print(f"{k:10} survived {sum(v)}/{len(v)}")
    clean = proc.returncode == 0 and not group_left and not left and not files
    print(f"worker exit {proc.returncode}; process group empty: {not group_left}; processes left: "
          f"{left or 'none'}; files left in its TMPDIR: {files or 'none'}")
    survived = sum(r["survived"] for r in results) if clean else 0
    print(f"points={len(points)} run={len(results)} survived={survived} "
          f"leftovers={int(not clean)} kinds={len(by_kind)} wall_s={wall:.1f}")


if __name__ == "__main__":
    main()
