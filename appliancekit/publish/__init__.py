"""Publishing built images: SD-card release directories (`sdcard`), AMIs (`ec2`) and
deploy repositories (`git`). Every target first checks the image against its SHA256SUMS."""

from __future__ import annotations

from appliancekit.publish.image import VerifiedImage, open_image_dir, write_image_bmap

__all__ = ["VerifiedImage", "open_image_dir", "write_image_bmap"]
