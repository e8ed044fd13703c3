"""Nothing to log in with or to change the image from the inside: no shell, login, getty,
remote shell daemon, package manager or compiler."""

from __future__ import annotations

import fnmatch
import posixpath

from appliancekit.audit.image import AuditImage
from appliancekit.audit.registry import audit_check

FORBIDDEN = {
    "shell": ("sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox", "toybox"),
    "login": ("login", "su", "sudo", "doas", "sulogin"),
    "getty": ("getty", "agetty", "mingetty", "fbgetty"),
    "remote shell": ("sshd", "dropbear", "telnetd", "in.telnetd", "rshd", "in.rshd"),
    "package manager": (
        "apt", "apt-get", "aptitude", "dpkg", "dpkg-deb", "rpm", "yum", "dnf", "apk",
        "pip", "pip3", "pip3.*", "easy_install", "npm", "gem",
    ),
    "compiler": (
        "gcc", "gcc-[0-9]*", "*-gcc", "*-gcc-[0-9]*", "g++", "g++-[0-9]*", "cc", "c++", "clang",
        "clang-[0-9]*", "tcc", "as", "ld", "ld.bfd", "ld.gold", "rustc", "go", "javac",
    ),
}  # fmt: skip


def _category(name: str) -> str | None:
    for category, patterns in FORBIDDEN.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return category
    return None


@audit_check("forbidden-programs", "no shell, login, getty, sshd, package manager or compiler")
def check_forbidden(image: AuditImage) -> list[str]:
    findings = []
    for entry in image.entries():
        # a program is an executable file or a link to one (a link's target may be absent:
        # the name alone is what an attacker would try)
        runnable = entry.is_symlink or (entry.is_file and entry.mode & 0o111)
        category = _category(posixpath.basename(entry.path)) if runnable else None
        if category:
            what = f" -> {entry.target}" if entry.is_symlink else ""
            findings.append(f"{category}: {entry.path}{what}")
    return findings
