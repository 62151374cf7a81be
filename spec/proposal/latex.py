"""Typeset the balloon section with the proposal applied, to check the patched LaTeX compiles.

The virtio spec's own build (virtio.tex, makeall.sh) needs the whole tree. Here a small wrapper
document loads the upstream ``commands.tex`` (the spec's macros: ``\\field``, ``\\drivernormative``,
``\\conformance``, ...), defines the few environments the balloon files use that live in the main
document, and inputs the three patched files in their chapters, so sections number as in the spec
(5.5 Memory Balloon Device). ``pdflatex`` comes from Debian's texlive-latex-base and
texlive-latex-recommended.

``python -m spec.proposal.latex [OUT.pdf]`` applies the committed series to the upstream files and
writes the PDF.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .build import DEFAULT_UPSTREAM, FILES, HERE

WRAPPER = r"""\documentclass[11pt]{report}
\usepackage[T1]{fontenc}
\usepackage{underscore}
\usepackage{xcolor}
\usepackage{listings}
\usepackage{hyperref}
\lstset{basicstyle=\ttfamily\small, columns=fullflexible}
\input{commands.tex}
\newenvironment{note}{\par\noindent\textbf{Note:}\ }{\par}
\begin{document}
\setcounter{chapter}{4}
\chapter{Device Types}
\setcounter{section}{4}
\input{device-types/balloon/description.tex}
\chapter{Conformance}
\section{Device Conformance}
\input{device-types/balloon/device-conformance.tex}
\section{Driver Conformance}
\input{device-types/balloon/driver-conformance.tex}
\end{document}
"""


class LatexError(RuntimeError):
    """pdflatex is missing, failed, or left a balloon cross-reference unresolved (one line, with the
    first error from its log)."""


def apply_series(upstream: Path, into: Path, patches: list[Path] | None = None) -> None:
    """Copy the upstream balloon files and commands.tex into ``into`` and apply the series there."""
    for f in (*FILES, "commands.tex"):
        (into / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(upstream / f, into / f)
    for patch in patches if patches is not None else sorted(HERE.glob("0*.patch"))[1:]:
        out = subprocess.run(["git", "apply", str(patch)], cwd=into, capture_output=True, text=True)
        if out.returncode:
            raise LatexError(f"{patch.name} does not apply: {out.stderr.strip().splitlines()[0]}")


def typeset(tree: Path, out: Path) -> list[str]:
    """Run pdflatex twice (for references) on the wrapper in ``tree``; return the labels the balloon
    section defines. Raises :class:`LatexError` on any LaTeX error or unresolved balloon reference."""
    if shutil.which("pdflatex") is None:
        raise LatexError("pdflatex not found (install texlive-latex-base and texlive-latex-recommended)")
    (tree / "balloon.tex").write_text(WRAPPER)
    for _ in range(2):
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "balloon.tex"],
                             cwd=tree, capture_output=True, text=True, errors="replace", timeout=300)
        log = (tree / "balloon.log").read_text(errors="replace")
        if run.returncode:
            first = next((ln for ln in log.splitlines() if ln.startswith("!")), "no '!' line in the log")
            raise LatexError(f"pdflatex failed: {first}")
    # TeX wraps its log at 79 columns; join wrapped lines before matching.
    flat = "".join(ln if len(ln) == 79 else ln + "\n" for ln in log.splitlines())
    missing = sorted(set(re.findall(r"Reference `([^']*Memory Balloon Device[^']*)' on page \d+ undefined", flat)))
    if missing:
        raise LatexError(f"unresolved balloon reference: {missing[0]}")
    shutil.copyfile(tree / "balloon.pdf", out)
    return re.findall(r"\\newlabel\{((?:driver|device)normative:[^}]*)\}", (tree / "balloon.aux").read_text())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "balloon-proposal.pdf").resolve()
    with tempfile.TemporaryDirectory() as d:
        try:
            apply_series(DEFAULT_UPSTREAM, Path(d))
            labels = typeset(Path(d), out)
        except LatexError as e:
            print(f"latex: {e}", file=sys.stderr)
            return 1
    print(f"{out} ({len(labels)} normative sections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
