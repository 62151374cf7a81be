"""Build the proposal patch series: ``python -m spec.proposal.build [--fixes URL] [UPSTREAM_DIR]``.

Applies the edits of ``edits.py`` to a scratch copy of the upstream virtio 1.4 files (read from
../shared/reference/virtio-spec-1.4 by default, never stored here) and writes ``git format-patch``
files next to this module, with the cover letter.

The virtio TC asks for a ``Fixes:`` line naming the GitHub issue a change resolves. No issue has been
opened for this series yet, so the committed patches carry :data:`FIXES_UNFILED`, which says so in
place of a URL; once the issue exists, rebuild with ``--fixes https://github.com/oasis-tcs/virtio-spec/issues/N``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from .edits import COMMITS

HERE = Path(__file__).resolve().parent
DEFAULT_UPSTREAM = HERE.parents[2] / "shared" / "reference" / "virtio-spec-1.4"
FILES = ("device-types/balloon/description.tex", "device-types/balloon/device-conformance.tex",
         "device-types/balloon/driver-conformance.tex")
AUTHOR = ["-c", "user.name=virtio-balloon-ref", "-c", "user.email=virtio-balloon-ref@invalid"]


class ProposalError(RuntimeError):
    """An edit no longer matches the upstream text (one line, naming the commit and file)."""


#: Stands in the Fixes: line until the virtio-spec issue for this series is opened (see the docstring).
FIXES_UNFILED = "virtio-spec issue not yet opened; rebuild with --fixes URL"
DATE = "2026-11-26T12:00:00+00:00"  # fixed, so a rebuild gives byte-identical patches
ENV = {"GIT_AUTHOR_DATE": DATE, "GIT_COMMITTER_DATE": DATE, "PATH": "/usr/bin:/bin", "HOME": "/nonexistent",
       "GIT_CONFIG_NOSYSTEM": "1"}

COVER = """From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: virtio-balloon-ref <virtio-balloon-ref@invalid>
Date: Thu, 26 Nov 2026 12:00:00 +0000
Subject: [PATCH 0/{n}] balloon: make free page hinting precise

Free page hinting lets a guest tell the host which pages it need not migrate.
The text leaves open the questions the 2016 review of the first proposal asked:
which request a hint answers, and what "free" means when the guest may reuse
the page a moment later. Implementations filled the gaps differently.

This series answers them with the rules Linux and QEMU already follow, except
where following them loses data:

{summary}
Evidence: an executable model of the device, the driver and a live-migration
host (virtio-balloon-ref), whose property tests find a short history that
loses guest data when the host's ordering or the command ID rule of patches
3 and 5 is left out; a conformance suite run against
QEMU 7.2 and 10.0 over qtest, real migrations included, with a standalone
reproducer for each QEMU behaviour cited; and Linux 6.1's driver, unmodified,
under User-Mode Linux against the model's device. Each new normative sentence
carries a requirement ID in a comment, for review; the IDs are not meant to
be merged.

Upstream threads this series answers or touches:

  - Queue numbering (patch 4): David Hildenbrand's "virtio-balloon: Fix
    queue index assignment for non-existing queues" (2025-04-04, in [1]),
    the same rule, and Michael S. Tsirkin's Linux patch "virtio: fix vq #
    for balloon" (2024-07-10, [2]), a different one; patch 4 says how.
  - Host ordering and round end (patches 5 and 6): Firecracker v1.14
    discards hinted ranges as it reads them (PR #5491 [3]); e2b-dev/infra
    PR #3001 (2026-06-13 [4]) reports queued stale hints destroying live
    guest data; in e2b-dev/infra PR #2552 [5] a reviewer points out that a
    round is complete only when the host has set DONE, not when the guest
    echoes the command ID.
  - A driver that waits for each hint's ACK: the RFC "virtio_balloon:
    Support wait on ACK for hinting" (Jack Thomson, 2026-01-19 [6]) takes
    feature bit 6, as do virtio-spec issues #242 (DEVICE_INIT_ON_INFLATE,
    2026-04-22) and #244 (DEVICE_INIT_REPORTED, 2026-05-03). This series
    takes no feature bit; the wait-on-ACK text is a separate RFC series.
  - Not answered here: virtio-spec issue #228 (contradictory deflate
    requirements, 2025-06-11) and #240 (PAGE_POISON's short description,
    2026-04-22, a wording fix).

[1] https://lore.kernel.org/all/20250402203621.940090-1-david@redhat.com/
[2] https://lore.kernel.org/all/3d655be73ce220f176b2c163839d83699f8faf43.1720611677.git.mst@redhat.com/
[3] https://github.com/firecracker-microvm/firecracker/pull/5491
[4] https://github.com/e2b-dev/infra/pull/3001
[5] https://github.com/e2b-dev/infra/pull/2552
[6] https://lore.kernel.org/lkml/20260119154236.39412-1-jackabt.amazon@gmail.com
    virtio-spec issues: https://github.com/oasis-tcs/virtio-spec/issues/N

Fixes: {fixes}

{stat}
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *AUTHOR, *args], cwd=repo, check=True, capture_output=True, text=True,
                          env=ENV).stdout


def build(upstream: Path = DEFAULT_UPSTREAM, out: Path = HERE, fixes: str = FIXES_UNFILED) -> list[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        for f in FILES:
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(upstream / f, repo / f)
        _git(repo, "init", "-q")
        _git(repo, "add", ".")
        _git(repo, "commit", "-q", "-m", "virtio 1.4 (15f488c1), balloon files")
        for c in COMMITS:
            for f, old, new in c["edits"]:
                text = (repo / f).read_text()
                if text.count(old) != 1:
                    raise ProposalError(f"{c['slug']}: the text to replace occurs {text.count(old)} times in {f}")
                (repo / f).write_text(text.replace(old, new))
            _git(repo, "commit", "-q", "-a", "-m", f"{c['subject']}\n\n{c['body']}\nFixes: {fixes}\n")
        for old in out.glob("0*.patch"):
            old.unlink()
        base = "HEAD~%d" % len(COMMITS)
        _git(repo, "format-patch", "-q", "--no-signature", "--zero-commit", "-o", str(out), base)
        summary = "".join(f"  {i}. {c['subject']}\n" for i, c in enumerate(COMMITS, 1))
        stat = _git(repo, "diff", "--stat", base, "HEAD")
        (out / "0000-cover-letter.patch").write_text(COVER.format(n=len(COMMITS), summary=summary, stat=stat,
                                                                  fixes=fixes))
    return sorted(out.glob("0*.patch"))  # cover letter first


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Build the proposal patch series.")
    p.add_argument("upstream", nargs="?", type=Path, default=DEFAULT_UPSTREAM, help="virtio 1.4 checkout")
    p.add_argument("--fixes", default=FIXES_UNFILED, help="URL of the virtio-spec GitHub issue")
    args = p.parse_args(argv)
    for patch in build(args.upstream, fixes=args.fixes):
        print(patch.name)


if __name__ == "__main__":
    main()
