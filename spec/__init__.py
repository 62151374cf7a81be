"""The requirement catalogue (``requirements.toml``) and, later, the proposal to the virtio TC.

``spec.catalogue`` loads and validates the catalogue; everything else cites requirements by ID.
"""
