"""Locks and reproducibility, measured in one run (issue: releases anyone can rebuild):

  1. a build from the lock vs a build that resolves with apt (package cache warm for both;
     the resolving build starts from apt's fresh indexes without its resolution cache);
  2. `verify-release` of the host build vs the host build itself;
  3. the same recipe + lock built in a fresh Debian 12 chroot that differs in path, umask,
     locale, TZ and package cache (empty: every .deb comes from the pool by the lock's
     sha256) vs the host build: equal disk.img sha256, and the time (cold and warm cache).

    sudo .venv/bin/python bench/bench_reproducible.py [--recipe homepage]
        [--board qemu-virt-arm64] [--skip-chroot] [--json]

Builds the committed HEAD (a clone, as a new machine gets it). Needs root (the chroot; image
trees are owned by their service users) and the fresh base
tree of ../shared/tools/fresh-machine ($FRESH_BASE, default /var/tmp/fresh-bookworm.tar).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliancekit.board import find_board  # noqa: E402
from appliancekit.build import BuildPlan, build  # noqa: E402
from appliancekit.cache import Cache, default_cache_dir  # noqa: E402
from appliancekit.manifest import load_manifest  # noqa: E402
from appliancekit.output import Reporter  # noqa: E402
from appliancekit.project import Project  # noqa: E402
from appliancekit.publish.sdcard import publish_sdcard  # noqa: E402
from appliancekit.recipe import find_recipe, resolve_settings  # noqa: E402
from appliancekit.release.verify import first_root_difference, verify_release  # noqa: E402

# the build's host tools (scripts/setup-host.sh without QEMU and Nix: nothing is booted here)
CHROOT_PACKAGES = [
    "apt",
    "debian-archive-keyring",
    "gpgv",
    "ca-certificates",
    "python3",
    "python3-venv",
    "python3-pip",
    "erofs-utils",
    "cryptsetup-bin",
    "fdisk",
    "dosfstools",
    "mtools",
    "e2fsprogs",
    "cpio",
    "kmod",
    "bmap-tools",
    "zstd",
    "xz-utils",
    "git",
    "make",
    "device-tree-compiler",
    "busybox-static",
    "minisign",
]
CHROOT_PROJECT = "/srv/elsewhere/appliance-kit"  # another path than the host's checkout
CHROOT_ENV = {
    "TZ": "Pacific/Chatham",
    "LANG": "de_DE.UTF-8",
    "LC_ALL": "de_DE.UTF-8",
    "APPLIANCEKIT_CACHE": "/var/cache/another-cache",  # empty: everything from the pool
}
CHROOT_UMASK = "0027"


def timed_build(project: Project, recipe: str, board: str, images: Path) -> tuple[float, str]:
    r = find_recipe(recipe, project.recipes_dir)
    plan = BuildPlan(r, find_board(board, project.boards_dir), resolve_settings(r, {}), images)
    started = time.monotonic()
    result = build(plan, Cache(default_cache_dir()), Reporter(), force=True)
    return time.monotonic() - started, str(result.manifest.disk.sha256)


def resolving_build(recipe: str, board: str, work: Path) -> float:
    """The same build from a copy of the project without the locks: apt resolves."""
    copy = work / "unlocked"
    for sub in ("recipes", "boards"):
        shutil.copytree(REPO / sub, copy / sub)
    for lock in (copy / "recipes").glob("*/debian-*.lock"):
        lock.unlink()
    cache = Cache(default_cache_dir())
    for resolved in (cache.root / "apt").glob("*/resolved"):
        shutil.rmtree(resolved, ignore_errors=True)  # a cache of apt's answers, rebuilt
    seconds, _ = timed_build(Project(copy), recipe, board, work / "images-unlocked")
    return seconds


def chroot_build(recipe: str, board: str, base: Path, keep: Path) -> dict[str, object]:
    """Build in a fresh chroot; the image directory is copied to `keep` for comparison."""
    root = Path(tempfile.mkdtemp(prefix="ak-repro-", dir="/var/tmp"))
    mounts: list[Path] = []
    try:
        subprocess.run(["tar", "-C", str(root), "-xf", str(base)], check=True)
        project = root / CHROOT_PROJECT.lstrip("/")
        project.parent.mkdir(parents=True)
        # a clone of the committed HEAD, as a new machine gets it: the source date of a build
        # is the committer time of its inputs, the same in every clone
        subprocess.run(["git", "clone", "-q", str(REPO), str(project)], check=True)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        # a new machine here has the host's Debian sources (suite, -updates, -security), so
        # the same versions of the image tools as the host
        for sources in Path("/etc/apt").glob("sources.list.d/debian.sources"):
            shutil.copy(sources, root / "etc/apt/sources.list.d" / sources.name)
            (root / "etc/apt/sources.list").unlink(missing_ok=True)
        for extra in ("/etc/pip.conf",):
            if Path(extra).exists():
                shutil.copy(extra, root / extra.lstrip("/"))
        cas = list(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        if cas:
            (root / "usr/local/share/ca-certificates").mkdir(parents=True, exist_ok=True)
            for ca in cas:
                shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
        for d in ("proc", "sys", "dev", "dev/pts"):
            (root / d).mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", f"/{d}", str(root / d)], check=True)
            mounts.append(root / d)

        def inside(script: str, env: dict[str, str] | None = None) -> str:
            base_env = {
                "HOME": "/root",
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "DEBIAN_FRONTEND": "noninteractive",
            }
            for var in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
                if var in os.environ:
                    base_env[var] = os.environ[var]
            result = subprocess.run(
                [
                    "chroot",
                    str(root),
                    "/usr/bin/env",
                    "-i",
                    *(f"{k}={v}" for k, v in {**base_env, **(env or {})}.items()),
                    "bash",
                    "-c",
                    script,
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise SystemExit(f"chroot step failed: {script}\n{result.stdout}\n{result.stderr}")
            return result.stdout

        started = time.monotonic()
        inside(
            "update-ca-certificates >/dev/null 2>&1 || true; apt-get update -qq && "
            f"apt-get install -y -qq --no-install-recommends {' '.join(CHROOT_PACKAGES)} "
            ">/dev/null"
        )
        inside(
            f"cd {CHROOT_PROJECT} && python3 -m venv .venv && "
            ".venv/bin/pip install -q --disable-pip-version-check -e ."
        )
        setup_seconds = time.monotonic() - started
        build_cmd = (
            f"umask {CHROOT_UMASK}; cd {CHROOT_PROJECT} && "
            f".venv/bin/appliancekit build {recipe} --board {board} --force --json"
        )
        started = time.monotonic()
        cold = json.loads(inside(build_cmd, CHROOT_ENV))
        cold_seconds = time.monotonic() - started
        shutil.copytree(root / cold["image_dir"].lstrip("/"), keep, symlinks=True)
        started = time.monotonic()
        warm = json.loads(inside(build_cmd, CHROOT_ENV))
        warm_seconds = time.monotonic() - started
        return {
            "path": CHROOT_PROJECT,
            "env": CHROOT_ENV,
            "umask": CHROOT_UMASK,
            "user": "root (image trees are chowned to service users)",
            "setup_seconds": round(setup_seconds, 1),
            "cold_cache_seconds": round(cold_seconds, 1),
            "warm_cache_seconds": round(warm_seconds, 1),
            "sha256": cold["sha256"],
            "sha256_warm": warm["sha256"],
        }
    finally:
        for mount in reversed(mounts):
            subprocess.run(["umount", "-l", str(mount)], check=False)
        if not any(m.is_mount() for m in mounts):
            shutil.rmtree(root, ignore_errors=True)


def _explain(host: Path, chroot: Path) -> dict[str, object]:
    """Where two builds of the same inputs differ: fingerprint, partitions, first root file."""
    a, b = load_manifest(host), load_manifest(chroot)
    parts = {p.name: (p.sha256 if hasattr(p, "sha256") else None) for p in a.disk.partitions}
    differing = [
        p.name for p in b.disk.partitions if getattr(p, "sha256", None) != parts.get(p.name)
    ]
    with tempfile.TemporaryDirectory(prefix="ak-bench-diff-") as tmp:
        first = first_root_difference(host / "disk.img", chroot / "disk.img", a, b, Path(tmp))
    return {
        "inputs_equal": a.inputs == b.inputs,
        "differing_partitions": differing,
        "first_root_difference": first,
        "host_image": str(host),
        "chroot_image": str(chroot),
    }


def _summary(figures: dict[str, Any]) -> str:
    host = figures["host"]
    lines = [
        f"{figures['recipe']} on {figures['board']}, warm package cache:",
        f"  build from lock     {host['build_from_lock_seconds']:6.1f} s",
    ]
    if "build_that_resolves_seconds" in figures:
        lines.append(
            f"  build that resolves {figures['build_that_resolves_seconds']:6.1f} s   "
            f"lock/resolve = {figures['lock_vs_resolve_ratio']}"
        )
    if "verify_release" in figures:
        v = figures["verify_release"]
        lines.append(
            f"  verify-release      {v['seconds']:6.1f} s   verify/build = "
            f"{v['ratio_to_build']}, identical: {v['equal']}"
        )
    if "fresh_chroot" in figures:
        c = figures["fresh_chroot"]
        lines += [
            f"  fresh chroot ({c['path']}, umask {c['umask']}, TZ {CHROOT_ENV['TZ']}, "
            f"{CHROOT_ENV['LC_ALL']}, empty cache): sha256 equal to host: {c['equal_to_host']}",
            f"    cold cache {c['cold_cache_seconds']} s, warm {c['warm_cache_seconds']} s, "
            f"warm/host = {c['warm_ratio_to_host']}; chroot set-up {c['setup_seconds']} s",
            f"  host   {host['sha256']}",
            f"  chroot {c['sha256']}",
        ]
        if "difference" in c:
            lines.append(f"  difference: {json.dumps(c['difference'])}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="homepage")
    parser.add_argument("--board", default="qemu-virt-arm64")
    parser.add_argument("--skip-chroot", action="store_true")
    parser.add_argument(
        "--chroot-only", action="store_true", help="only the host build and the chroot build"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    project = Project(REPO)
    figures: dict[str, Any] = {"recipe": args.recipe, "board": args.board}
    with tempfile.TemporaryDirectory(prefix="ak-bench-repro-") as tmp:
        work = Path(tmp)
        images = work / "images"
        timed_build(project, args.recipe, args.board, images)  # warm every cache first
        lock_seconds, host_sha = timed_build(project, args.recipe, args.board, images)
        figures["host"] = {"sha256": host_sha, "build_from_lock_seconds": round(lock_seconds, 1)}
        if not args.chroot_only:
            resolve_seconds = resolving_build(args.recipe, args.board, work)
            figures["build_that_resolves_seconds"] = round(resolve_seconds, 1)
            figures["lock_vs_resolve_ratio"] = round(lock_seconds / resolve_seconds, 2)

        image_dir = images / f"{args.recipe}-{args.board}"
        host_image = Path(tempfile.mkdtemp(prefix="ak-bench-host-image-")) / "image"
        shutil.copytree(image_dir, host_image)
        if not args.chroot_only:
            release = work / "release"
            publish_sdcard(image_dir, release)
            verify = verify_release(release, project, Cache(default_cache_dir()), Reporter())
            figures["verify_release"] = {
                "equal": verify.equal,
                "seconds": round(verify.rebuild_seconds, 1),
                "ratio_to_build": round(verify.rebuild_seconds / lock_seconds, 2),
            }
    if not args.skip_chroot:
        base = Path(os.environ.get("FRESH_BASE", "/var/tmp/fresh-bookworm.tar"))
        if not base.exists():
            raise SystemExit(f"{base} missing: run ../shared/tools/fresh-machine true once")
        kept = Path(tempfile.mkdtemp(prefix="ak-bench-chroot-image-")) / "image"
        chroot = chroot_build(args.recipe, args.board, base, kept)
        if chroot["sha256"] != host_sha:
            chroot["difference"] = _explain(host_image, kept)
        chroot["equal_to_host"] = chroot["sha256"] == host_sha == chroot["sha256_warm"]
        chroot["warm_ratio_to_host"] = round(
            float(chroot["warm_cache_seconds"]) / lock_seconds,
            2,  # type: ignore[arg-type]
        )
        figures["fresh_chroot"] = chroot
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(_summary(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
