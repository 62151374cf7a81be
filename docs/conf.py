"""Sphinx configuration. Reference pages are generated from the model at build time (_ext/vcdocs.py)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent / "_ext")]

project = "virtio-balloon free page hinting: executable reference"
author = "virtio-balloon-ref"
extensions = ["sphinx.ext.graphviz", "vcdocs"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
graphviz_output_format = "svg"
nitpicky = False
