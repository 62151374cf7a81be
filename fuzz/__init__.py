"""Coverage-guided fuzz targets for every parser of untrusted bytes (issue 19).

Each module defines ``TARGETS: dict[str, Callable[[bytes], None]]``. A target builds its input from the
bytes, calls the parser, and returns normally when the parser gave a result or raised the project's own
error for that input (see :mod:`fuzz.harness`); anything else escapes as :class:`fuzz.harness.Finding`.
``python -m fuzz.run TARGET`` runs one under atheris; ``bench/bench_fuzz.py`` runs them all.
"""
