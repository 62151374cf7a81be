"""Balloon proposals as opt-in profiles (issue 17): one module per profile, each the reference device and
driver behaviour the proposal asks for, sans-I/O, citing the profile's catalogue entries.

* :mod:`.hint_wait_on_ack` -- ``VIRTIO_BALLOON_F_HINT_WAIT_ON_ACK`` (RFC, Jack Thomson, 2026-01-19);
* :mod:`.device_init_on_inflate` -- ``DEVICE_INIT_ON_INFLATE`` (virtio-spec #242);
* :mod:`.device_init_reported` -- ``DEVICE_INIT_REPORTED`` (#244);
* :mod:`.stats_only` -- Amit Shah's statistics-only mode (2016);
* :mod:`.bitmap_inflate` -- Michael S. Tsirkin's bitmap for inflate/deflate (2016);
* :mod:`.combined_vq` -- his "3rd vq which does inflate/deflate in one go" (2016);
* :mod:`.bits` -- their feature bits, and what bit 6 means when three proposals claim it.

Issue #240 (PAGE_POISON's short description) changes wording, not meaning: it has no profile.
"""

#: Profile names, as the catalogue's ``profile`` field spells them.
PROFILES = ("hint-wait-on-ack", "device-init-on-inflate", "device-init-reported", "stats-only",
            "bitmap-inflate-deflate", "combined-inflate-deflate-vq", "proposal-bits")
