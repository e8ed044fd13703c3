"""The tiny generated initramfs: busybox (initramfs only), dmsetup, mke2fs, the board's modules.

Why not Debian's generic initramfs (udev alone takes longer under TCG than this whole boot)
and what it does: docs/architecture.md; the figures: docs/measurements.md. Its contents come
from the same target-architecture packages and ELF closure machinery as the root.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2

from appliancekit import supervisor
from appliancekit.board import Board
from appliancekit.boot.kmod import KernelModule, KernelTree, MissingModuleError, resolve_modules
from appliancekit.errors import ToolError
from appliancekit.minimise import ClosureRequest, closure
from appliancekit.rootfs import (
    BOOT_DIRS_FILE,
    CLOCK_FLOOR_FILE,
    DATA_MOUNT,
    PER_DEVICE_FILES,
    PER_DEVICE_SOURCE,
    PER_DEVICE_TARGET,
    SAVED_CLOCK,
    SETTINGS_DEFAULTS,
    SETTINGS_KINDS,
    package_tree,
)
from appliancekit.settings_kinds import SettingKind, boot_glob
from appliancekit.sources.unpack import UnpackedPackage
from appliancekit.tomlsource import find_in_list, source_error
from appliancekit.tree import RootTree, materialise

PACKAGES = ("busybox-static", "dmsetup", "e2fsprogs", "fdisk")
EXECUTABLES = (
    "/usr/bin/busybox",
    "/usr/sbin/dmsetup",
    "/usr/sbin/mke2fs",
    "/usr/sbin/resize2fs",
    "/usr/sbin/sfdisk",
)
KEEP = ("/etc/mke2fs.conf",)
# Busybox applets the init script uses, linked at build time (busybox --install would
# replace e2fsprogs' own mke2fs with busybox's reduced one).
APPLETS = (
    "sh",
    "mount",
    "umount",
    "mkdir",
    "cat",
    "sleep",
    "date",
    "grep",
    "sed",
    "dd",
    "od",
    "ls",
    "cp",
    "chown",
    "chmod",
    "basename",
    "insmod",
    "modprobe",
    "ip",
    "udhcpc",
    "poweroff",
    "reboot",
    "switch_root",
    "echo",
    "printf",
    "test",
    "[",
    "tr",
    "dirname",
    "readlink",
    "blockdev",
    "df",
    "sync",
    "mv",
)
PARTITION_NAMES = ("ak-boot", "ak-root-a", "ak-root-b", "ak-data")


@dataclass(frozen=True)
class Initramfs:
    path: Path  # gzip-compressed newc cpio
    kernel_version: str
    modules: tuple[str, ...]  # module names in load order
    size: int


def _template(name: str) -> str:
    return resources.files("appliancekit.boot").joinpath("templates", name).read_text()


def render_init(board: Board, kernel_version: str, partition_numbers: dict[str, int]) -> str:
    from appliancekit.boot import boot_path, tryboot
    from appliancekit.boot.slotswitch import DIRECT_STATE, Mechanism

    switch = boot_path(board).slot_switch(board)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string(_template("init.sh.j2"))
    return template.render(
        initramfs_chooses=switch.mechanism == Mechanism.INITRAMFS,
        trial_from_autoboot=switch.mechanism == Mechanism.RPI_TRYBOOT,
        slot_partitions=tryboot.SLOT_PARTITIONS,
        state_file=DIRECT_STATE,
        watchdog=switch.watchdog,
        kernel_version=kernel_version,
        disk_prefix=board.disk.device_prefix if board.disk.table.value == "mbr" else "",
        partitions=partition_numbers,
        data_mount=DATA_MOUNT,
        boot_dirs=BOOT_DIRS_FILE,
        clock_floor=CLOCK_FLOOR_FILE,
        saved_clock=SAVED_CLOCK,
        per_device_files=PER_DEVICE_FILES,
        per_device_source=PER_DEVICE_SOURCE,
        per_device_target=PER_DEVICE_TARGET,
        settings_defaults=SETTINGS_DEFAULTS,
        settings_kinds=SETTINGS_KINDS,
        kind_globs=[(str(kind), boot_glob(kind)) for kind in SettingKind],
        service_dir=supervisor.SERVICE_DIR,
        scan_dir=supervisor.SCAN_DIR,
        init=" ".join(supervisor.INIT),
    )


def initramfs_tree(
    packages: Sequence[UnpackedPackage],
    board: Board,
    kernel: KernelTree,
    modules: Sequence[KernelModule],
    partition_numbers: dict[str, int],
) -> RootTree:
    full = package_tree(packages)
    for name in ("bin", "sbin", "lib", "lib64"):
        if f"/usr/{name}" in full:
            full.add_symlink(f"/{name}", f"usr/{name}")
    request = ClosureRequest(executables=EXECUTABLES, keep=KEEP, origin="initramfs")
    keep = closure(full, board.arch, [request])
    tree = RootTree()
    for entry in full:
        if entry.path in keep:
            tree.entries[entry.path] = entry
    if "/lib" not in tree:  # amd64's closure reaches only /lib64; depmod writes via /lib
        tree.add_symlink("/lib", "usr/lib")
    for directory in ("/dev", "/proc", "/sys", "/run", "/newroot", "/tmp"):
        tree.ensure_dir(directory)
    for applet in APPLETS:
        if f"/usr/bin/{applet}" not in tree and f"/usr/sbin/{applet}" not in tree:
            tree.add_symlink(f"/usr/bin/{applet}", "busybox")
    tree.add_file("/init", render_init(board, kernel.version, partition_numbers), mode=0o755)
    tree.add_file("/etc/appliancekit/udhcpc.script", _template("udhcpc.script"), mode=0o755)
    tree.add_file("/etc/appliancekit/modules.order", "".join(f"{m.relpath}\n" for m in modules))
    for module in modules:
        data = module.read(strip_signature=board.kernel.strip_module_signatures)
        tree.add_file(f"/usr/lib/modules/{kernel.version}/{module.relpath}", data, mode=0o644)
    return tree


# Every board reads per-device settings from a FAT boot partition.
BOOT_PARTITION_MODULES = ("vfat", "nls_cp437", "nls_ascii", "nls_utf8")


def build_initramfs(
    packages: Sequence[UnpackedPackage],
    board: Board,
    kernel: KernelTree,
    output: Path,
    partition_numbers: dict[str, int],
    built_modules: Sequence[KernelModule] = (),
) -> Initramfs:
    """`built_modules` (built from source, sources/kmods) load last: they may use any module."""
    try:
        modules = resolve_modules(kernel, (*board.kernel.modules, *BOOT_PARTITION_MODULES))
    except MissingModuleError as exc:
        key = find_in_list(board.source_file, ("kernel", "modules"), exc.module)
        raise source_error(board.source_file, key, exc.message) from None
    modules = [*modules, *built_modules]
    tree = initramfs_tree(packages, board, kernel, modules, partition_numbers)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        root = Path(tmp) / "root"
        materialise(tree, root)
        _depmod(root, kernel.version)
        _write_cpio(root, output)
    return Initramfs(output, kernel.version, tuple(m.name for m in modules), output.stat().st_size)


def build_marker_initramfs(packages: Sequence[UnpackedPackage], board: Board, output: Path) -> Path:
    """The floor for boot benchmarks: busybox printing a marker and powering off."""
    full = package_tree(packages)
    tree = RootTree()
    for path in closure(full, board.arch, [ClosureRequest(executables=("/usr/bin/busybox",))]):
        tree.entries[path] = full.entries[path]
    for applet in ("sh", "echo", "mount", "poweroff", "sleep"):
        tree.add_symlink(f"/usr/bin/{applet}", "busybox")
    tree.add_symlink("/bin", "usr/bin")
    tree.ensure_dir("/dev")
    tree.add_file(
        "/init",
        "#!/usr/bin/busybox sh\nmount -t devtmpfs devtmpfs /dev\n"
        "echo appliancekit-marker > /dev/console\npoweroff -f\n",
        mode=0o755,
    )
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        root = Path(tmp) / "root"
        materialise(tree, root)
        _write_cpio(root, output)
    return output


def _depmod(root: Path, version: str) -> None:
    # modules.dep/alias let the kernel's own module requests (e.g. crypto algorithms) work.
    result = subprocess.run(
        ["depmod", "-b", str(root), version], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ToolError(f"depmod failed: {result.stderr.strip()}")
    # depmod writes under lib/modules, which is usr/lib/modules through the merged-/usr link
    for generated in sorted((root / "usr/lib/modules" / version).glob("modules.*")):
        if generated.suffix == ".bin":
            generated.unlink()  # binary indexes only speed up kmod's modprobe, not busybox's
        else:
            generated.chmod(0o644)  # depmod creates them with the build's umask


def _write_cpio(root: Path, output: Path) -> None:
    """A reproducible gzip'd newc archive: sorted names, zero mtimes, root ownership."""
    names = ["."]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            names.append(os.path.relpath(os.path.join(dirpath, name), root))
    for name in names:
        os.utime(root / name, (0, 0), follow_symlinks=False)
    cpio = _run_cpio(root, names)
    tmp = output.with_suffix(".part")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as gz,
    ):
        gz.write(cpio)
    os.replace(tmp, output)


def _run_cpio(root: Path, names: list[str]) -> bytes:
    if shutil.which("cpio") is None:
        raise ToolError("cpio not found: apt-get install cpio")
    result = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--reproducible", "-R", "0:0", "--quiet"],
        input=("\n".join(names) + "\n").encode(),
        cwd=root,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise ToolError(f"cpio failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout
