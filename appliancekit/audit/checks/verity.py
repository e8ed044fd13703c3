"""The sealed root: its dm-verity hash tree verifies against the manifest's root hash, and the
kernel command line carries that same root hash and salt."""

from __future__ import annotations

from appliancekit.audit.image import AuditImage
from appliancekit.audit.registry import audit_check
from appliancekit.errors import ToolError
from appliancekit.hostcmd import run


@audit_check("verity", "the verity root hash matches the manifest and the partition")
def check_verity(image: AuditImage) -> list[str]:
    verity = image.manifest.verity
    if verity is None:
        return ["the manifest records no dm-verity root hash: the root is not sealed"]
    findings = []
    words = image.manifest.kernel_cmdline.split()
    for key, want in (("ak.roothash", verity.root_hash), ("ak.salt", verity.salt)):
        got = next((w.split("=", 1)[1] for w in words if w.startswith(f"{key}=")), None)
        if got != want:
            findings.append(f"kernel command line has {key}={got}, the manifest {want}")
    root = image.partition_file("root")
    if verity.hash_offset:  # one partition per slot: the hash tree follows the erofs image
        argv = ["veritysetup", "verify", f"--hash-offset={verity.hash_offset}", root, root]
        argv.append(verity.root_hash)
    else:
        argv = ["veritysetup", "verify", root, image.partition_file("verity"), verity.root_hash]
    try:
        run([*argv, f"--data-blocks={verity.data_blocks}"])
    except ToolError as exc:
        findings.append(f"the root partition does not verify against the root hash ({exc})")
    return findings
