"""The build pipeline: recipe + board -> sealed, bootable disk image in images/NAME-BOARD/.

Stages hand plain dataclasses to each other; this module only orders them. Everything is
written into images/.tmp/ and renamed into place at the end, so a failed build leaves
nothing half-written, and an unchanged build (same inputs fingerprint) is a no-op.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import appliancekit
from appliancekit import slots, supervisor
from appliancekit.agent import packages as agent_packages
from appliancekit.agent.gobuild import GoBinary, build_go
from appliancekit.agent.install import UPDATER, agent_service, install_agent
from appliancekit.atomic import replace_dir
from appliancekit.board import Board
from appliancekit.boot import BootInputs, BootLayout, boot_path
from appliancekit.boot import initramfs as initramfs_stage
from appliancekit.boot.kmod import KernelModule, KernelTree, find_kernel
from appliancekit.boot.slotswitch import SLOTS_JSON, render_slots_json
from appliancekit.cache import Cache
from appliancekit.content.gobuild import go_version
from appliancekit.devsettings import setting_records
from appliancekit.digest import fingerprint, sha256_file
from appliancekit.disk import (
    FAT_EPOCH,
    PartitionRole,
    PartitionSpec,
    assemble_disk,
    make_fat_image,
    write_sha256sums,
)
from appliancekit.errors import UserError
from appliancekit.manifest import (
    MANIFEST,
    DiskRecord,
    Manifest,
    ServiceRecord,
    SizeRecord,
    SlotRecord,
    VerityRecord,
    read_manifest,
    write_manifest,
)
from appliancekit.minimise import SizeReport, minimise
from appliancekit.monitoring import PACKAGES as MONITORING_PACKAGES
from appliancekit.monitoring import agent as monitoring_agent
from appliancekit.output import Reporter
from appliancekit.publish.image import write_image_bmap
from appliancekit.recipe import Recipe, ResolvedSettings, SettingKind
from appliancekit.rootfs import CLOCK_FLOOR_FILE, build_root
from appliancekit.seal import seal_tree
from appliancekit.settings_kinds import as_text
from appliancekit.sourcedate import source_date_epoch
from appliancekit.sources import kmods, npm, pypi
from appliancekit.sources.debian import (
    DEFAULT_MIRRORS,
    AptSource,
    DebianSource,
    DebianSourceFor,
    DebPackage,
    Mirrors,
    select_kernel_packages,
)
from appliancekit.sources.debian_lock import LockedSource, lock_path, read_lock
from appliancekit.sources.unpack import UnpackedPackage, unpack
from appliancekit.staging import work_dir
from appliancekit.tomlsource import find_in_list, source_error
from appliancekit.tree import RootTree, materialise

DISK = "disk.img"
SIZE_REPORT_JSON = "size-report.json"
SIZE_REPORT_TEXT = "size-report.txt"
PARTITION_NUMBERS = slots.PARTITION_NUMBERS
MIB = 1 << 20


@dataclass(frozen=True)
class BuildPlan:
    recipe: Recipe
    board: Board
    settings: ResolvedSettings
    images_dir: Path
    # minisign public key (the base64 key line) the update agent trusts; None: the agent
    # refuses every release (appliancekit keygen makes one; `build --update-key`)
    update_key: str | None = None

    @property
    def name(self) -> str:
        return f"{self.recipe.name}-{self.board.name}"

    @property
    def suite(self) -> str:
        return self.recipe.debian.suite or self.board.suite

    @property
    def output_dir(self) -> Path:
        return self.images_dir / self.name

    def source_paths(self) -> list[Path]:
        """The recipe directory and every path setting: what the recipe's files and copied
        trees are made from."""
        paths = [self.recipe.directory]
        values = self.settings.as_dict()
        for setting in self.recipe.settings:
            if setting.kind == SettingKind.PATH and values.get(setting.name) is not None:
                paths.append(Path(str(values[setting.name])))
        return paths


@dataclass(frozen=True)
class ResolvedSources:
    root: tuple[DebPackage, ...]
    initramfs: tuple[DebPackage, ...]
    kernel: tuple[DebPackage, ...]
    firmware: tuple[DebPackage, ...] = ()
    agent: tuple[DebPackage, ...] = ()  # the update agent's (agent/packages.py)
    # apt's messages for -updates/-security indexes that could not be verified
    missing_indexes: tuple[str, ...] = ()

    def all(self) -> list[DebPackage]:
        return sorted(set(self.root + self.initramfs + self.kernel + self.firmware + self.agent))


@dataclass(frozen=True)
class BuildResult:
    output_dir: Path
    manifest: Manifest
    rebuilt: bool
    seconds: float


@dataclass(frozen=True)
class DebianInputs:
    """Where this build's Debian packages come from: the recipe's lock for (suite, arch)
    when there is one (no apt at all), otherwise apt resolving against the current index."""

    target: DebianSource
    for_arch: DebianSourceFor
    lock: dict[str, object] | None = None  # the lock's description for the manifest


def debian_inputs(
    plan: BuildPlan,
    cache: Cache,
    reporter: Reporter,
    *,
    refresh: bool = False,
    mirrors: Mirrors = DEFAULT_MIRRORS,
) -> DebianInputs:
    arch = plan.board.arch.value
    lock_file = lock_path(plan.recipe.directory, plan.suite, arch)
    if lock_file.exists():
        lock = read_lock(lock_file)
        if lock.unavailable:
            raise UserError(
                f"Debian {plan.suite} builds no {', '.join(lock.unavailable)} for {arch}: "
                f"{plan.recipe.name} cannot be built for {plan.board.name}",
                file=lock_file,
            )
        reporter.step(f"Debian {plan.suite}/{arch}: packages from {lock_file.name}")

        def locked(for_arch: str) -> DebianSource:
            return LockedSource(lock, lock_file, cache, for_arch, mirrors)

        target = LockedSource(lock, lock_file, cache, arch, mirrors)
        return DebianInputs(target, locked, target.describe())

    def apt(for_arch: str) -> DebianSource:
        source = AptSource(cache, plan.suite, for_arch, mirrors.debian, mirrors.security)
        source.update(force=refresh)
        return source

    reporter.step(f"Debian {plan.suite}/{arch}: package indexes")
    return DebianInputs(apt(arch), apt)


def build(
    plan: BuildPlan,
    cache: Cache,
    reporter: Reporter,
    *,
    refresh: bool = False,
    force: bool = False,
    mirrors: Mirrors = DEFAULT_MIRRORS,
) -> BuildResult:
    started = time.monotonic()
    if not plan.recipe.services:
        raise source_error(
            plan.recipe.source_file,
            ("appliance", "backend"),
            f"{plan.recipe.name} has no Debian part ([debian] and [[service]]): it builds only"
            " with the NixOS backend",
        )
    _check_built_modules(plan.board)
    python = pypi.plan(plan.recipe, plan.board.arch.value)  # lock only: fails fast, no network
    node = npm.plan(plan.recipe, plan.board.arch.value)  # the same for npm packages
    debian = debian_inputs(plan, cache, reporter, refresh=refresh, mirrors=mirrors)
    apt = debian.target
    sources = resolve_sources(plan, apt)
    agent_source = agent_packages.agent_source(plan.suite, plan.board.arch.value, cache, mirrors)
    sources = replace(sources, agent=agent_packages.agent_packages(agent_source, sources.root))
    agent_binary = build_go(UPDATER, plan.board.arch.value, cache.root, name="ak-update")
    for problem in sources.missing_indexes:
        reporter.info(f"warning: building without an index apt could not verify: {problem}")
    epoch = source_date_epoch(plan.source_paths())
    inputs = input_fingerprint(plan, sources, epoch, agent_binary.sha256)
    existing = read_manifest(plan.output_dir)
    if (
        not force
        and existing is not None
        and existing.inputs == inputs
        and (plan.output_dir / DISK).exists()
    ):
        reporter.step(f"{plan.name}: up to date")
        return BuildResult(plan.output_dir, existing, False, time.monotonic() - started)

    all_packages = sources.all()
    missing = [p for p in all_packages if not cache.deb_path(p.sha256).exists()]
    if missing:
        size = sum(p.size for p in missing)
        reporter.step(f"downloading {len(missing)} packages ({size / MIB:.1f} MiB)")
    agent_set = set(sources.agent)
    fetched = {f.package: f for f in apt.fetch([p for p in all_packages if p not in agent_set])}
    fetched.update({f.package: f for f in agent_source.fetch(list(sources.agent))})
    unpacked = {}
    with reporter.progress("unpacking packages", total=len(all_packages)) as task:
        for package in all_packages:
            unpacked[package] = unpack(cache, fetched[package])
            task.advance()
    if python is not None:
        reporter.step("Python wheels and bytecode")
    wheels = pypi.install(
        cache, python, plan.suite, [unpacked[p] for p in sources.root], debian.for_arch
    )
    if plan.recipe.monitoring is not None:
        reporter.step("monitoring agent")
    agent = monitoring_agent.install(
        cache, plan.recipe.monitoring is not None, plan.board.arch.value
    )
    node_modules = npm.NpmInstall()
    if node is not None:
        with reporter.progress("npm packages", total=len(node.packages)) as task:
            node_modules = npm.install(
                cache, node, [unpacked[p] for p in sources.root], progress=task.advance
            )

    kernel = find_kernel(
        next(unpacked[p].root for p in sources.kernel if (unpacked[p].root / "boot").is_dir())
    )
    built_modules = _built_modules(plan, kernel, cache, reporter, mirrors)

    with work_dir(plan.images_dir, f"{plan.name}.") as work:
        manifest = _build_into(
            plan,
            sources,
            unpacked,
            kernel,
            built_modules,
            inputs,
            epoch,
            work,
            reporter,
            wheels,
            debian.lock,
            agent,
            agent_binary,
            node_modules,
        )
        replace_dir(work / "out", plan.output_dir, scratch=work)
    return BuildResult(plan.output_dir, manifest, True, time.monotonic() - started)


def _check_built_modules(board: Board) -> None:
    """A board naming a module with no source here fails before anything is fetched."""
    for name in board.kernel.built_modules:
        if name not in kmods.available():
            raise source_error(
                board.source_file,
                find_in_list(board.source_file, ("kernel", "built_modules"), name),
                f"no kernel module source {name!r} (known: {', '.join(kmods.available())})",
            )


def _built_modules(
    plan: BuildPlan, kernel: KernelTree, cache: Cache, reporter: Reporter, mirrors: Mirrors
) -> tuple[KernelModule, ...]:
    """The board's modules built from source (sources/kmods) for this kernel, as the
    initramfs loads them: in updates/, where Debian puts modules not from the kernel."""
    names = plan.board.kernel.built_modules
    if not names:
        return ()
    reporter.step(f"kernel modules from source: {', '.join(names)}")
    built = kmods.build_modules(
        names, plan.suite, kernel.version, plan.board.arch.value, cache, mirrors
    )
    return tuple(KernelModule(m.name, f"updates/{m.name}.ko", m.path, ()) for m in built)


def resolve_sources(plan: BuildPlan, apt: DebianSource) -> ResolvedSources:
    return resolve_recipe_sources(plan.recipe, plan.board, apt)


def resolve_recipe_sources(recipe: Recipe, board: Board, apt: DebianSource) -> ResolvedSources:
    """Every set of Debian packages an image of `recipe` for `board` is made from (a lock
    pins exactly these sets)."""
    root_names = (*recipe.debian.packages, *supervisor.PACKAGES)
    recipe_file, board_file = recipe.source_file, board.source_file
    root = _resolve(apt, root_names, recipe_file, ("debian", "packages"))
    if recipe.monitoring is not None:
        # a set of its own, so a lock serves the recipe with and without monitoring (a cloud
        # can turn it on for any member)
        root = sorted({*root, *apt.resolve(MONITORING_PACKAGES)})
    return ResolvedSources(
        root=tuple(root),
        initramfs=tuple(apt.resolve(initramfs_stage.PACKAGES)),
        kernel=tuple(
            select_kernel_packages(
                _resolve(apt, [board.kernel.package], board_file, ("kernel", "package"))
            )
        ),
        # only the named packages: their dependencies serve maintainer scripts, not the boot
        firmware=tuple(
            p
            for p in _resolve(apt, board.firmware.packages, board_file, ("firmware", "packages"))
            if p.name in board.firmware.packages
        ),
        missing_indexes=tuple(apt.missing_indexes()),
    )


# apt's words for a name it cannot install ("Unable to locate package X", "Package 'X' has no
# installation candidate", "Couldn't find any package by glob 'X'")
_APT_PACKAGE = re.compile(r"(?:package|glob)\s+'?([A-Za-z0-9][A-Za-z0-9+.:-]*)'?", re.IGNORECASE)


def _resolve(
    apt: AptSource, names: Sequence[str], file: Path, key: tuple[str, ...]
) -> list[DebPackage]:
    """apt.resolve, with an unresolvable package reported at its line in the recipe or board."""
    try:
        return apt.resolve(names)
    except UserError as exc:
        if exc.file is not None:
            raise
        found = _APT_PACKAGE.search(exc.message)
        name = found.group(1) if found else None
        where = find_in_list(file, key, name) if name in names else key
        raise source_error(file, where, exc.message) from None


def input_fingerprint(
    plan: BuildPlan, sources: ResolvedSources, epoch: int = 0, agent: str = ""
) -> str:
    """Everything the image depends on; equal fingerprints mean an identical image.

    `epoch` is the build's SOURCE_DATE_EPOCH (every file's mtime in the image)."""
    settings = {}
    for setting in plan.recipe.settings:
        value = plan.settings.as_dict().get(setting.name)
        if setting.kind == SettingKind.PATH and value is not None:
            settings[setting.name] = _tree_digest(Path(str(value)))
        else:
            settings[setting.name] = value
    return fingerprint(
        {
            "appliancekit": appliancekit.__version__,
            "code": _code_digest(),
            "recipe": _tree_digest(plan.recipe.directory),
            "board": sha256_file(plan.board.source_file),
            "settings": settings,
            # every package whose bytes reach the disk, the boot firmware (raspi-firmware,
            # u-boot-sunxi, systemd-boot-efi) included
            "packages": [p.sha256 for p in sources.all()],
            "source_date_epoch": epoch,
            "missing_indexes": list(sources.missing_indexes),
            # the compiler decides the bytes of the Go programs an image holds
            **({"go": go_version()} if plan.recipe.content else {}),
            **(
                {
                    "monitoring_agent": [
                        monitoring_agent.source_digest(),
                        monitoring_agent.go_version(),
                    ]
                }
                if plan.recipe.monitoring is not None
                else {}
            ),
            "update_key": plan.update_key,
            "agent": agent,  # the agent binary's sha256 (Go version and source)
        }
    )


# The code that decides an image's bytes; editing the CLI, publishing or tests does not
# invalidate built images.
IMAGE_CODE = (
    "board.py",
    "build.py",
    "digest.py",
    "disk.py",
    "manifest.py",
    "minimise.py",
    "monitoring",
    "recipe.py",
    "rootfs.py",
    "seal.py",
    "slots.py",
    "sourcedate.py",
    "supervisor.py",
    "tomlsource.py",
    "tree.py",
    "backup",
    "boot",
    "sources",
    "content",
    "agent",
)


def _code_digest() -> str:
    package = Path(appliancekit.__file__).parent
    return fingerprint([(name, _tree_digest(package / name)) for name in IMAGE_CODE])


def _tree_digest(path: Path) -> str:
    """Names, contents and the executable bit (as git records them): the other mode bits
    come from the umask of whoever checked the tree out and never reach the image."""
    if path.is_file():
        return sha256_file(path)
    parts = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_file() and not name.endswith(".pyc"):
                executable = bool(full.stat().st_mode & 0o111)
                parts.append((str(full.relative_to(path)), sha256_file(full), executable))
    return fingerprint(parts)


def _build_into(
    plan: BuildPlan,
    sources: ResolvedSources,
    unpacked: Mapping[DebPackage, UnpackedPackage],
    kernel: KernelTree,
    built_modules: Sequence[KernelModule],
    inputs: str,
    epoch: int,
    work: Path,
    reporter: Reporter,
    wheels: pypi.PythonInstall | None = None,
    lock: Mapping[str, object] | None = None,
    agent: monitoring_agent.AgentInstall | None = None,
    agent_binary: GoBinary | None = None,
    node_modules: npm.NpmInstall | None = None,
) -> Manifest:
    wheels = wheels or pypi.PythonInstall()
    agent = agent or monitoring_agent.AgentInstall()
    node_modules = node_modules or npm.NpmInstall()
    out = work / "out"
    out.mkdir()
    board = plan.board

    # First: a board asking for a module its kernel lacks fails before the long stages.
    reporter.step("kernel and initramfs")
    kernel_pkg = next(p for p in sources.kernel if (unpacked[p].root / "boot").is_dir())
    initramfs = initramfs_stage.build_initramfs(
        [unpacked[p] for p in sources.initramfs],
        board,
        kernel,
        work / "initrd.img",
        PARTITION_NUMBERS,
        built_modules,
    )

    reporter.step("assembling the root tree")
    root_packages = (
        [unpacked[p] for p in sources.root + sources.agent]
        + list(wheels.packages)
        + list(agent.packages)
        + list(node_modules.packages)
    )
    root_plan = build_root(root_packages, plan.recipe, plan.settings, board)
    # how this board's loader switches slots, for the update agent (boot/slotswitch.py)
    switch = boot_path(board).slot_switch(board)
    root_plan.tree.add_file(SLOTS_JSON, render_slots_json(switch, board))
    root_plan.tree.add_file(CLOCK_FLOOR_FILE, f"{epoch}\n")
    requests = root_plan.requests + wheels.requests
    if agent_binary is not None:
        requests += (
            install_agent(root_plan.tree, plan.recipe, board, agent_binary, plan.update_key, epoch),
        )
    reporter.step("minimising")
    tree, report = minimise(root_plan.tree, board.arch, requests + node_modules.requests)
    agent_bytes = _agent_bytes(tree, sources.agent, agent_binary)
    staging = work / "root"
    materialise(tree, staging)

    reporter.step("sealing (erofs + dm-verity)")
    sealed = seal_tree(staging, work / "seal", inputs, epoch=epoch)
    shutil.rmtree(staging)
    slot_image = slots.combine(sealed.erofs_image, sealed.verity_image, work / "slot.img")
    slot_size = slots.slot_partition_bytes(slot_image.size)

    cmdline = kernel_cmdline(board, sealed.kernel_cmdline(), slot="a")
    boot_work = work / "boot"
    boot_work.mkdir()
    boot = boot_path(board).layout(
        BootInputs(
            board=board,
            kernel=kernel,
            kernel_package=unpacked[kernel_pkg],
            initramfs=initramfs.path,
            cmdline=cmdline,
            firmware=tuple(unpacked[p] for p in sources.firmware),
            workdir=boot_work,
            seed=inputs,
            appliance=plan.recipe.name,
        )
    )
    boot_parts, boot_size, slot_boot_bytes = _boot_partitions(
        boot,
        board,
        work,
        inputs,
        max(epoch, FAT_EPOCH),  # FAT cannot say anything before 1980
    )

    reporter.step("assembling the disk image")
    disk = assemble_disk(
        out / DISK,
        board.disk.table.value,
        board.arch.value,
        [
            *boot_parts,
            PartitionSpec(
                slots.partition_name("a"), PartitionRole.ROOT, slot_size, slot_image.path
            ),
            PartitionSpec(slots.partition_name("b"), PartitionRole.ROOT, slot_size, None),
            PartitionSpec("ak-data", PartitionRole.DATA, board.disk.data_size_mib * MIB, None),
        ],
        inputs,
        first_offset=boot.first_offset,
        reserved_head=boot.reserved_head,
        round_to_power_of_two=boot.round_to_power_of_two,
        fill_last=True,  # data is last
    )
    sealed_size = sealed.erofs_image.stat().st_size
    slot_sizes = {
        "slot_partition_bytes": slot_size,
        "slot_root_bytes": slot_image.size,
        "slot_boot_bytes": slot_boot_bytes,
        "boot_partition_bytes": boot_size,
    }
    (out / SIZE_REPORT_JSON).write_text(
        json.dumps(
            {
                **report.to_json(),
                "sealed_root_bytes": sealed_size,
                **slot_sizes,
                "agent_bytes": agent_bytes,
                **({"npm": node_modules.trim.to_json()} if node_modules.trim else {}),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    (out / SIZE_REPORT_TEXT).write_text(
        _size_text(report, sealed_size, slot_sizes, agent_bytes)
        + (f"\n{node_modules.trim.to_text()}" if node_modules.trim else "")
    )
    manifest = Manifest(
        name=plan.name,
        recipe=plan.recipe.name,
        board=board.name,
        arch=board.arch.value,
        suite=plan.suite,
        boot=board.boot.value,
        inputs=inputs,
        source_date_epoch=epoch,
        appliancekit=appliancekit.__version__,
        settings={k: as_text(v) for k, v in plan.settings.values},
        setting_records=setting_records(plan.recipe),
        packages=[
            p.to_json() | {"role": role}
            for role, group in (
                ("root", sources.root),
                ("initramfs", sources.initramfs),
                ("kernel", sources.kernel),
                ("firmware", sources.firmware),
                ("agent", sources.agent),
            )
            for p in group
        ]
        + list(wheels.manifest)
        + list(agent.manifest)
        + list(node_modules.manifest),
        kernel_version=kernel.version,
        kernel_cmdline=cmdline,
        initramfs_modules=list(initramfs.modules),
        verity=VerityRecord(
            root_hash=sealed.root_hash,
            salt=sealed.salt,
            data_blocks=sealed.data_blocks,
            erofs_uuid=sealed.erofs_uuid,
            verity_uuid=sealed.verity_uuid,
            hash_offset=slot_image.hash_offset,
            hash_bytes=slot_image.hash_bytes,
        ),
        slots=tuple(
            SlotRecord(
                name=slot,
                partition=slots.partition_name(slot),
                boot_dir="" if boot.slot_partitions else slots.boot_dir(slot),
                boot_files=tuple(sorted(boot.slot_files)),
                written=slot == "a",
                boot_partition=f"ak-boot-{slot}" if boot.slot_partitions else "ak-boot",
            )
            for slot in slots.SLOTS
        ),
        slot_switch=str(switch.mechanism),
        disk=DiskRecord.of(disk, DISK),
        sizes=SizeRecord(
            disk_bytes=disk.size,
            unminimised_root_bytes=report.before,
            minimised_root_bytes=report.after,
            sealed_root_bytes=sealed_size,
            initramfs_bytes=initramfs.size,
            kernel_bytes=kernel.image.stat().st_size,
            slot_partition_bytes=slot_size,
            slot_root_bytes=slot_image.size,
            slot_boot_bytes=slot_boot_bytes,
            agent_bytes=agent_bytes,
        ),
        backend="debian",
        services=tuple(
            ServiceRecord(s.name, s.user, s.root_reason)
            for s in (*root_plan.services, *([agent_service()] if agent_binary else []))
        ),
        probes=[_probe_json(p) for p in plan.recipe.probes],
        ports=sorted({*plan.recipe.ports, *(p.port for p in plan.recipe.probes)}),
        extra={
            "test_settings": dict(plan.recipe.test_settings),
            **({"debian_lock": dict(lock)} if lock else {}),
            **(
                {"missing_indexes": list(sources.missing_indexes)}
                if sources.missing_indexes
                else {}
            ),
        },
    )
    write_manifest(out, manifest)
    # The block map makes flashing and publishing skip hashing the empty data partition.
    bmap = write_image_bmap(out)
    write_sha256sums(out, [DISK, MANIFEST, SIZE_REPORT_JSON, SIZE_REPORT_TEXT, bmap.name])
    return manifest


def _boot_partitions(
    boot: BootLayout, board: Board, work: Path, seed: str, epoch: int
) -> tuple[list[PartitionSpec], int, int]:
    """The boot partition (or ESP) with slot A's boot files in its directory, or, when the
    loader picks partitions (`slot_partitions`), the boot partition and one FAT partition
    per slot. Returns the partitions, the boot partition's size and one slot's boot bytes."""
    slot_boot_bytes = sum(p.stat().st_size for p in boot.slot_files.values())
    if boot.slot_partitions:
        top_bytes = sum(p.stat().st_size for p in boot.files.values())
        boot_size = max(4 * MIB, _round_mib(top_bytes * 1.1 + 2 * MIB))
        slot_size = max(board.disk.boot_size_mib * MIB, _round_mib(slot_boot_bytes * 1.1 + 4 * MIB))
        parts = [
            PartitionSpec(
                "ak-boot",
                boot.role,
                boot_size,
                make_fat_image(
                    work / "boot.vfat", boot.files, boot_size, "AK-BOOT", seed, epoch=epoch
                ),
                bootable=True,
            )
        ]
        for slot in slots.SLOTS:
            # slot B's is an empty filesystem: the agent has files to write, no mkfs
            files = boot.slot_files if slot == "a" else {}
            label = f"AK-BOOT-{slot.upper()}"
            image = make_fat_image(
                work / f"boot-{slot}.vfat", files, slot_size, label, seed, epoch=epoch
            )
            parts.append(PartitionSpec(f"ak-boot-{slot}", boot.role, slot_size, image))
        return parts, boot_size, slot_boot_bytes
    slot_a = slots.boot_dir("a")
    boot_files = {**boot.files, **{f"{slot_a}/{n}": p for n, p in boot.slot_files.items()}}
    # room for slot B's boot files too: the first update writes them
    boot_bytes = sum(p.stat().st_size for p in boot_files.values()) + slot_boot_bytes
    boot_size = max(board.disk.boot_size_mib * MIB, _round_mib(boot_bytes * 1.1 + 4 * MIB))
    boot_image = make_fat_image(
        work / "boot.vfat", boot_files, boot_size, "AK-BOOT", seed, epoch=epoch
    )
    return (
        [PartitionSpec("ak-boot", boot.role, boot_size, boot_image, bootable=True)],
        boot_size,
        slot_boot_bytes,
    )


def kernel_cmdline(board: Board, verity_words: Sequence[str], slot: str = "a") -> str:
    words = [
        f"console={board.kernel.console}",
        "quiet",
        "panic=10",
        *board.kernel.cmdline,
        *verity_words,
        f"ak.slot={slots.check_slot(slot)}",
    ]
    return " ".join(words)


def _probe_json(probe: object) -> dict[str, object]:
    from dataclasses import asdict

    return {k: str(v) if hasattr(v, "value") else v for k, v in asdict(probe).items()}  # type: ignore[call-overload]


def _agent_bytes(tree: RootTree, agent: Sequence[DebPackage], binary: GoBinary | None) -> int:
    """What the update agent adds to the minimised root: its binary and the files kept
    from its own packages (minisign, libsodium)."""
    names = {p.name for p in agent}
    kept = sum(e.size for e in tree if e.package in names)
    return kept + (binary.size if binary is not None else 0)


def _size_text(
    report: SizeReport, sealed_size: int, slot_sizes: Mapping[str, int], agent_bytes: int
) -> str:
    def line(label: str, value: int) -> str:
        return f"{label:<18}{value} bytes ({value / MIB:.1f} MiB)\n"

    return (
        report.to_text()
        + "\n"
        + line("unminimised root:", report.before)
        + line("minimised root:", report.after)
        + line("sealed erofs:", sealed_size)
        + line("slot content:", slot_sizes["slot_root_bytes"])
        + line("root slot A:", slot_sizes["slot_partition_bytes"])
        + line("root slot B:", slot_sizes["slot_partition_bytes"])
        + line("boot files/slot:", slot_sizes["slot_boot_bytes"])
        + line("boot partition:", slot_sizes["boot_partition_bytes"])
        + line("update agent:", agent_bytes)
    )


def _round_mib(value: float) -> int:
    return int(-(-value // MIB) * MIB)
