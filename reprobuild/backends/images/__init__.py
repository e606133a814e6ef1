"""Builder images: specs, the Debian rootfs, deterministic layers and the image store."""
