"""System models: guest pages, the guest OS, the migration host, whole scenarios."""
