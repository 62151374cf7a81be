"""``python -m conformance``: the ``virtio-conformance`` command, for an install without its script."""

import sys

from conformance.cli import main

sys.exit(main())
