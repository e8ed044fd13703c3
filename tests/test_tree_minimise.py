"""The tree model and the ELF closure, on real ELF files of this host (x86_64)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from appliancekit.board import Architecture
from appliancekit.errors import UserError
from appliancekit.minimise import ClosureRequest, closure, minimise
from appliancekit.tree import Entry, RootTree, materialise


def host_tree(*paths: str) -> RootTree:
    """Every file below the given host directories, as package "host" (merged-/usr mapped)."""
    tree = RootTree()
    for top in paths:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                full = Path(dirpath) / name
                info = full.lstat()
                image_path = str(full)
                if stat.S_ISLNK(info.st_mode):
                    tree.add(
                        Entry(
                            image_path, "symlink", 0o777, target=os.readlink(full), package="host"
                        )
                    )
                elif stat.S_ISDIR(info.st_mode):
                    tree.add(Entry(image_path, "dir", 0o755, package="host"))
                elif stat.S_ISREG(info.st_mode):
                    tree.add(
                        Entry(
                            image_path,
                            "file",
                            stat.S_IMODE(info.st_mode),
                            size=info.st_size,
                            source=full,
                            package="host",
                        )
                    )
    return tree


@pytest.fixture(scope="module")
def libc_tree() -> RootTree:
    tree = host_tree("/usr/lib/x86_64-linux-gnu", "/usr/lib64")
    tree.add(
        Entry(
            "/usr/bin/true",
            "file",
            0o755,
            size=Path("/usr/bin/true").stat().st_size,
            source=Path("/usr/bin/true"),
            package="coreutils",
        )
    )
    tree.add(
        Entry(
            "/usr/bin/ls",
            "file",
            0o755,
            size=Path("/usr/bin/ls").stat().st_size,
            source=Path("/usr/bin/ls"),
            package="coreutils",
        )
    )
    tree.add_symlink("/lib64", "usr/lib64")
    tree.add_symlink("/lib", "usr/lib")
    return tree


def test_resolve_follows_symlinks_and_reports_them() -> None:
    tree = RootTree()
    tree.add_file("/usr/lib/libfoo.so.1.2", b"x")
    tree.add_symlink("/usr/lib/libfoo.so.1", "libfoo.so.1.2")
    tree.add_symlink("/lib", "usr/lib")
    final, links = tree.resolve("/lib/libfoo.so.1")
    assert final == "/usr/lib/libfoo.so.1.2"
    assert links == ["/lib", "/usr/lib/libfoo.so.1"]
    assert tree.resolve("/lib/missing")[0] is None


def test_resolve_stops_on_symlink_loops() -> None:
    tree = RootTree()
    tree.add_symlink("/a", "b")
    tree.add_symlink("/b", "a")
    assert tree.resolve("/a")[0] is None


def test_closure_of_a_real_binary(libc_tree: RootTree) -> None:
    keep = closure(libc_tree, Architecture.AMD64, [ClosureRequest(executables=("/usr/bin/ls",))])
    names = {p.rsplit("/", 1)[-1] for p in keep}
    assert "ls" in names and "true" not in names
    assert any(n.startswith("libc.so") for n in names)
    assert any(n.startswith("ld-linux-x86-64") for n in names)  # PT_INTERP
    assert any(n.startswith("libselinux") for n in names)  # DT_NEEDED of ls
    assert "/lib64" in keep  # the interpreter is reached through this link
    assert not any(n.startswith("libstdc++") for n in names)


def test_wrong_architecture_is_refused(libc_tree: RootTree) -> None:
    with pytest.raises(UserError, match="EM_X86_64, not arm64"):
        closure(libc_tree, Architecture.ARM64, [ClosureRequest(executables=("/usr/bin/true",))])


def test_missing_entry_point_names_the_declaration(libc_tree: RootTree) -> None:
    with pytest.raises(UserError, match="/usr/bin/nosuch") as err:
        closure(
            libc_tree,
            Architecture.AMD64,
            [ClosureRequest(executables=("/usr/bin/nosuch",), origin="recipe.toml")],
        )
    assert "recipe.toml" in str(err.value)


def test_shebang_pulls_its_interpreter(libc_tree: RootTree) -> None:
    libc_tree.add_file("/usr/local/bin/script", "#!/usr/bin/true -x\n", mode=0o755)
    keep = closure(
        libc_tree, Architecture.AMD64, [ClosureRequest(executables=("/usr/local/bin/script",))]
    )
    assert "/usr/bin/true" in keep


def test_minimise_reports_sizes_per_package(libc_tree: RootTree) -> None:
    kept, report = minimise(
        libc_tree, Architecture.AMD64, [ClosureRequest(executables=("/usr/bin/true",))]
    )
    assert report.after < report.before
    by_package = {p.package: p for p in report.packages}
    assert by_package["coreutils"].after == Path("/usr/bin/true").stat().st_size
    assert "/usr/bin/ls" not in kept and "/usr/bin/true" in kept


def test_materialise_keeps_modes_owners_and_links(tmp_path: Path) -> None:
    tree = RootTree()
    tree.add_file("/usr/bin/tool", b"#!x\n", mode=0o4755, uid=33, gid=33)
    tree.add_symlink("/bin", "usr/bin")
    tree.ensure_dir("/var/tmp", mode=0o1777)
    materialise(tree, tmp_path / "root")
    tool = (tmp_path / "root/usr/bin/tool").stat()
    assert stat.S_IMODE(tool.st_mode) == 0o4755 and tool.st_uid == 33
    assert os.readlink(tmp_path / "root/bin") == "usr/bin"
    shutil.rmtree(tmp_path / "root")


def test_generated_links_inside_a_kept_directory_need_no_target() -> None:
    """A recipe keeps /etc/thing whole while the pipeline puts a per-device link into it
    (target under /run, which exists only on the running appliance)."""
    tree = RootTree()
    tree.add(Entry("/etc/thing", "dir", 0o755, package="thing"))
    tree.add(Entry("/etc/thing/defaults", "file", 0o644, size=1, content=b"x", package="thing"))
    tree.add_symlink("/etc/thing/secret.conf", "/run/appliancekit/etc/thing/secret.conf")
    kept, _ = minimise(tree, Architecture.AMD64, [ClosureRequest(executables=(), keep=("/etc/thing",))])
    assert {"/etc/thing/defaults", "/etc/thing/secret.conf"} <= set(kept.entries)
