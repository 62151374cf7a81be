"""Every fuzz target, by name."""

from __future__ import annotations

from collections.abc import Callable

from fuzz import balloon, c_adapter, loaders, qemu, rings, vhost_user

TARGETS: dict[str, Callable[[bytes], None]] = {
    **rings.TARGETS, **balloon.TARGETS, **vhost_user.TARGETS, **qemu.TARGETS, **c_adapter.TARGETS,
    **loaders.TARGETS,
}
