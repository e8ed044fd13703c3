"""`build --backend nixos`: render the flake into the image directory, then build it with Nix
where Nix (with flakes) exists; otherwise stop with NeedsNixError (exit 3) naming the flake.

Layout of images/RECIPE-BOARD/ after a NixOS build:
    flake/            the rendered flake (always; what `nix build` was run on)
    disk.img          the board's disk image (copied out of the Nix store)
    manifest.json     Manifest with backend "nixos" (+ pin, seal, image module in extra)
    SHA256SUMS
Everything is written under images/.tmp/ first and renamed into place, as the Debian backend
does, so an interrupted build never leaves a half-written directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import appliancekit
from appliancekit.atomic import replace_dir
from appliancekit.board import Board
from appliancekit.devsettings import setting_records
from appliancekit.digest import fingerprint, sha256_file
from appliancekit.disk import write_sha256sums
from appliancekit.errors import NeedsNixError, ToolError
from appliancekit.manifest import MANIFEST, Manifest, SizeRecord, write_manifest
from appliancekit.nixos.nixversion import INSTALL, installed_nix, version_problem
from appliancekit.nixos.partitions import disk_record
from appliancekit.nixos.pin import NIXPKGS
from appliancekit.nixos.render import NixRender, render_flake
from appliancekit.output import Reporter
from appliancekit.recipe import Recipe, ResolvedSettings
from appliancekit.staging import work_dir

FLAKE_DIR = "flake"
DISK = "disk.img"
NIX_FEATURES = ("--extra-experimental-features", "nix-command flakes")


@dataclass(frozen=True)
class NixBuildResult:
    output_dir: Path
    flake: NixRender
    manifest: Manifest


def nix_unavailable_reason() -> str | None:
    """None when `nix` with flakes can build here; otherwise the one-line reason."""
    found = installed_nix()
    if found is None:
        return f"nix is not on PATH; {INSTALL}"
    nix, version = found
    # first the version: Debian 12's nix 2.8 has flakes, but nixpkgs refuses to evaluate
    # under it, and that would only show as an evaluation error deep in `nix build`
    problem = version_problem(version)
    if problem is not None:
        return problem
    try:
        proc = subprocess.run(
            [nix, *NIX_FEATURES, "flake", "--help"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nix does not run: {exc}"
    if proc.returncode != 0:
        return "this nix has no flakes support (nix flake --help failed)"
    # Nix can be installed where nixpkgs cannot be reached (as on these build hosts): that is
    # the same "render here, build elsewhere" case, not a failed build.
    try:
        proc = subprocess.run(
            [
                nix,
                *NIX_FEATURES,
                "flake",
                "prefetch",
                "--option",
                "connect-timeout",
                "5",
                "--json",
                NIXPKGS.url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return f"nixpkgs {NIXPKGS.short} could not be fetched in time"
    if proc.returncode != 0:
        return f"nixpkgs {NIXPKGS.short} cannot be fetched from this machine"
    return None


def build_nixos(
    recipe: Recipe,
    board: Board,
    settings: ResolvedSettings,
    images_dir: Path,
    reporter: Reporter,
) -> NixBuildResult:
    """Render images_dir/RECIPE-BOARD/flake and build its image with Nix.

    Without a usable Nix the flake is still put in place (complete: another machine can run
    `nix build` on it) and NeedsNixError says where it is and why it was not built.
    """
    images_dir = Path(images_dir)
    name = f"{recipe.name}-{board.name}"
    final = images_dir / name
    with work_dir(images_dir, f"{name}.nixos.") as work:
        out = work / "out"
        reporter.step(f"{name}: rendering the NixOS flake (nixpkgs {NIXPKGS.short})")
        flake = render_flake(recipe, board, settings, out / FLAKE_DIR)
        reason = nix_unavailable_reason()
        if reason is not None:
            # only the flake is new: an image already in `final` (e.g. from the Debian
            # backend) stays, and its flake/ is swapped atomically
            if final.is_dir():
                replace_dir(out / FLAKE_DIR, final / FLAKE_DIR, scratch=work)
            else:
                replace_dir(out, final, scratch=work)
            raise NeedsNixError(
                f"{final / FLAKE_DIR}: flake rendered, not built: {reason}; then run: "
                f"nix build {final / FLAKE_DIR}#image"
            )
        manifest = _nix_build(out, flake, recipe, board, settings, reporter)
        replace_dir(out, final, scratch=work)
    flake = NixRender(**{**flake.__dict__, "directory": final / FLAKE_DIR})
    return NixBuildResult(final, flake, manifest)


def _nix_build(
    out: Path,
    flake: NixRender,
    recipe: Recipe,
    board: Board,
    settings: ResolvedSettings,
    reporter: Reporter,
) -> Manifest:
    flake_dir = out / FLAKE_DIR
    target = f"path:{flake_dir}#packages.{flake.build_system}.image"
    reporter.step(f"nix build {target}")
    link = out / "result"
    proc = subprocess.run(
        ["nix", *NIX_FEATURES, "build", "--print-build-logs", "--out-link", str(link), target],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise ToolError(f"nix build {target} failed: {tail}")
    image = _find_image(link.resolve())
    shutil.copyfile(image, out / DISK)
    os.chmod(out / DISK, 0o644)
    link.unlink()
    return write_nixos_manifest(out, flake, recipe, board, image.name)


def write_nixos_manifest(
    out: Path, flake: NixRender, recipe: Recipe, board: Board, nix_image: str
) -> Manifest:
    """manifest.json and SHA256SUMS for out/disk.img, the image `nix build` made from
    out/flake. Its partitions are read back from the image, so `flash` finds the FAT
    partition to write settings.env to (where appliancekit-secrets.service reads it)."""
    flake_dir = out / FLAKE_DIR
    info = json.loads((flake_dir / "appliance.json").read_text())
    disk_bytes = (out / DISK).stat().st_size
    manifest = Manifest(
        name=flake.name,
        recipe=recipe.name,
        board=board.name,
        arch=board.arch.value,
        suite=NIXPKGS.branch,
        boot=board.boot.value,
        inputs=fingerprint({"flake": {f: sha256_file(flake_dir / f) for f in flake.files}}),
        appliancekit=appliancekit.__version__,
        settings=info["settings"],
        setting_records=setting_records(recipe),
        packages=[],
        kernel_version="",
        kernel_cmdline="",
        initramfs_modules=[],
        # Nix seals (or not) inside its own image build and does not report the hash tree;
        # the partition table is read back from the image it made
        verity=None,
        disk=disk_record(out / DISK, DISK),
        sizes=SizeRecord(disk_bytes=disk_bytes),
        probes=info["probes"],
        ports=info["ports"],
        backend="nixos",
        extra={
            "nixpkgs": info["nixpkgs"],
            "seal": flake.seal,
            "image_modules": list(flake.board_modules),
            "flake": FLAKE_DIR,
            "nix_image": nix_image,
            "secrets": info["secrets"],
        },
    )
    write_manifest(out, manifest)
    write_sha256sums(out, [DISK, MANIFEST])
    return manifest


def _find_image(result: Path) -> Path:
    """The disk image inside a `nix build` result (a file, or a directory holding one)."""
    if result.is_file():
        return result
    candidates = sorted(
        p
        for p in result.rglob("*")
        if p.is_file() and p.suffix in (".raw", ".img", ".vhd", ".zst") and "repart" not in p.name
    )
    if not candidates:
        raise ToolError(f"nix build produced no disk image under {result}")
    return max(candidates, key=lambda p: p.stat().st_size)
