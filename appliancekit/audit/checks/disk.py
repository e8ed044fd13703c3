"""The disk image is the one the manifest records: a boot partition changed after the build
(another kernel command line, another root hash) is caught here, the root by `verity`."""

from __future__ import annotations

from appliancekit.audit.image import AuditImage
from appliancekit.audit.registry import audit_check
from appliancekit.digest import sha256_file


@audit_check("disk-sha256", "the disk image matches the sha256 the manifest records")
def check_disk_sha256(image: AuditImage) -> list[str]:
    disk = image.directory / image.manifest.disk.path
    actual = sha256_file(disk)
    if actual != image.manifest.disk.sha256:
        return [
            f"{disk.name} has sha256 {actual}, the manifest records {image.manifest.disk.sha256}"
        ]
    return []
