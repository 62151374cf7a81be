"""Coverage-guided fuzzing of every parser of untrusted bytes (issue 19): each target of
:mod:`fuzz.targets` under atheris (libFuzzer), each in its own process, one after another (or ``--jobs``
at once).

Each run starts from the committed seed corpus (``fuzz/corpus/<target>``) and keeps the units it finds in
a temporary directory. Per target it prints the inputs run, the coverage libFuzzer reports (``cov``:
instrumented edges; ``ft``: features), the inputs that ended in anything but a result or the parser's own
named error (``other_exceptions``, goal 0; the first are saved under ``--findings``) and whether the process
ended cleanly (a libFuzzer timeout or out-of-memory ends it early). Ends with one ``key=value`` line.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fuzz.targets import TARGETS  # noqa: E402

RSS_LIMIT_MB = 2048
TIMEOUT_S = 10  # libFuzzer's per-input limit; fuzz.harness's bound is far tighter and counted, not fatal
MAX_LEN = 4096
_DONE = re.compile(r"^#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)", re.M)
_COV = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", re.M)
_UNITS = re.compile(r"stat::number_of_executed_units: (\d+)")


def run_target(name: str, inputs: int, findings: Path | None, max_seconds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as work:
        found_dir = findings / name if findings is not None else Path(work) / "findings"
        corpus_dir = Path(work) / "corpus"
        corpus_dir.mkdir()
        cmd = [sys.executable, "-m", "fuzz.run", name, f"-runs={inputs}", f"-rss_limit_mb={RSS_LIMIT_MB}",
               f"-timeout={TIMEOUT_S}", f"-max_len={MAX_LEN}", "-print_final_stats=1",
               "--findings", str(found_dir)]
        if max_seconds:
            cmd.append(f"-max_total_time={max_seconds}")
        cmd += [str(corpus_dir), str(ROOT / "fuzz" / "corpus" / name)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, errors="replace")
        seconds = time.monotonic() - start
        corpus = len(os.listdir(corpus_dir))
        count = found_dir / "count"
        found = int(count.read_text().strip() or 0) if count.exists() else 0
    err = proc.stderr
    cov = _DONE.findall(err) or _COV.findall(err)
    units = _UNITS.findall(err)
    status = "ok" if proc.returncode == 0 else (
        "oom" if "out-of-memory" in err else "timeout" if "ALARM" in err or "timeout" in err.lower() else
        f"exit {proc.returncode}")
    return {"target": name, "inputs": int(units[-1]) if units else int(cov[-1][0]) if cov else 0,
            "cov": int(cov[-1][1]) if cov else 0, "ft": int(cov[-1][2]) if cov else 0, "new_units": corpus,
            "other_exceptions": found, "status": status, "seconds": seconds,
            "tail": [ln for ln in err.splitlines() if ln.startswith("FINDING")][:3]
            + ([] if proc.returncode == 0 else err.strip().splitlines()[-3:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=10**6, help="inputs per target (libFuzzer -runs)")
    ap.add_argument("--targets", nargs="*", default=sorted(TARGETS), help="targets to run (default: all)")
    ap.add_argument("--findings", type=Path, default=None, help="save the first inputs of each finding here")
    ap.add_argument("--max-seconds", type=int, default=0,
                    help="stop a target after this long, however few inputs it ran (-max_total_time)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="targets run at once, each in its own process (rows print as they end)")
    args = ap.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        ap.error(f"unknown targets {sorted(unknown)}; known: {', '.join(sorted(TARGETS))}")
    cap = f", at most {args.max_seconds} s each" if args.max_seconds else ""
    at_once = "one target at a time" if args.jobs == 1 else f"{args.jobs} targets at a time"
    print(f"atheris/libFuzzer, {args.inputs} inputs per target{cap}, {at_once}")
    print(f"{'target':<24}{'inputs':>10}{'cov':>7}{'ft':>7}{'new':>6}{'other_exc':>10}{'exec/s':>8}"
          f"{'seconds':>9}  status")
    rows, start = [], time.monotonic()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:  # threads only wait on each target's process
        runs = [pool.submit(run_target, name, args.inputs, args.findings, args.max_seconds)
                for name in args.targets]
        for done in as_completed(runs):
            rows.append(done.result())
            _print_row(rows[-1])
    _print_summary(rows, args.inputs, time.monotonic() - start)


def _print_row(r: dict[str, object]) -> None:
    rate = r["inputs"] / r["seconds"] if r["seconds"] else 0  # type: ignore[operator]
    print(f"{r['target']:<24}{r['inputs']:>10}{r['cov']:>7}{r['ft']:>7}{r['new_units']:>6}"
          f"{r['other_exceptions']:>10}"
          f"{rate:>8.0f}{r['seconds']:>9.1f}  {r['status']}", flush=True)
    for line in r["tail"]:  # type: ignore[union-attr]
        print(f"    {line}")


def _print_summary(rows: list[dict[str, object]], wanted: int, wall: float) -> None:
    inputs = [int(r["inputs"]) for r in rows]  # type: ignore[call-overload]
    print(f"targets={len(rows)} inputs_min={min(inputs)} inputs_total={sum(inputs)} "
          f"targets_short={sum(1 for n in inputs if n < wanted)} "
          f"cov_total={sum(int(r['cov']) for r in rows)} "  # type: ignore[call-overload]
          f"other_exceptions={sum(int(r['other_exceptions']) for r in rows)} "  # type: ignore[call-overload]
          f"targets_with_findings={sum(1 for r in rows if r['other_exceptions'])} "
          f"unclean_exits={sum(1 for r in rows if r['status'] != 'ok')} "
          f"seconds={sum(float(r['seconds']) for r in rows):.0f} "  # type: ignore[arg-type]
          f"wall_seconds={wall:.0f}")


if __name__ == "__main__":
    main()
