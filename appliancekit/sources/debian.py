"""Debian packages for the target architecture through an isolated apt.

Each (suite, architecture) gets its own apt configuration, state and lists under the cache;
the host's apt state is never read or written. Index signatures are checked by apt against
the host's Debian archive keyring, and apt checks every .deb against the signed index; we
check the sha256 again when moving a .deb into the content-addressed cache.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from appliancekit.cache import Cache
from appliancekit.digest import fingerprint, sha256_file
from appliancekit.errors import ToolError, UserError

ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KNOWN_SUITES = ("bookworm", "trixie", "forky", "sid", "bookworm-backports", "trixie-backports")
COMPONENTS = ("main", "non-free-firmware")
# An index older than this is refreshed before resolving; `--refresh` forces it.
INDEX_MAX_AGE_SECONDS = 6 * 3600
UPDATE_ATTEMPTS = 4


@dataclass(frozen=True, order=True)
class DebPackage:
    """One binary package pinned to the exact file the signed index names."""

    name: str
    version: str
    architecture: str
    sha256: str
    size: int
    filename: str  # pool path in the archive
    installed_size: int = 0  # bytes, from the index's Installed-Size (KiB)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "sha256": self.sha256,
            "size": self.size,
        }


@dataclass(frozen=True)
class FetchedDeb:
    package: DebPackage
    path: Path  # the .deb in the content-addressed cache


class DebianSource(Protocol):
    """Where a build's Debian packages come from: apt resolving against the current index
    (AptSource) or a committed lock (debian_lock.LockedSource)."""

    def resolve(self, packages: Iterable[str]) -> list[DebPackage]: ...

    def fetch(self, packages: Sequence[DebPackage]) -> list[FetchedDeb]: ...

    def missing_indexes(self) -> list[str]: ...


# the source for one architecture (a build also runs the suite's Python on the build host)
DebianSourceFor = Callable[[str], DebianSource]


@dataclass(frozen=True)
class Mirrors:
    """The archive and its security archive. A snapshot archive URL
    (`.../archive/debian/YYYYMMDDTHHMMSSZ/`) names its security twin
    (`.../archive/debian-security/SAME/`), so one `--mirror` option gives both."""

    debian: str = DEFAULT_MIRROR
    security: str = DEFAULT_SECURITY_MIRROR

    @classmethod
    def from_option(cls, url: str | None) -> Mirrors:
        if not url:
            return cls()
        url = url.rstrip("/")
        if not re.match(r"^(https?|file)://", url):
            raise UserError(f"--mirror {url!r} is not an http(s):// or file:// URL")
        if "/archive/debian/" in url + "/":
            return cls(
                url,
                (url + "/").replace("/archive/debian/", "/archive/debian-security/").rstrip("/"),
            )
        return cls(url, DEFAULT_SECURITY_MIRROR)

    def url_for(self, filename: str) -> str:
        """The pool path's URL: security updates live under pool/updates/ of the security
        archive."""
        base = self.security if filename.startswith("pool/updates/") else self.debian
        return f"{base.rstrip('/')}/{filename}"


DEFAULT_MIRRORS = Mirrors()


@dataclass(frozen=True)
class AptSource:
    """apt with its own configuration and state for one (suite, architecture)."""

    cache: Cache
    suite: str
    arch: str
    mirror: str = DEFAULT_MIRROR
    security_mirror: str = DEFAULT_SECURITY_MIRROR

    @property
    def root(self) -> Path:
        return self.cache.apt_dir(self.suite, self.arch)

    @property
    def config_file(self) -> Path:
        return self.root / "apt.conf"

    def _sources(self) -> str:
        components = " ".join(COMPONENTS)
        signed = f"[signed-by={ARCHIVE_KEYRING}]"
        lines = [f"deb {signed} {self.mirror} {self.suite} {components}"]
        base = self.suite.split("-")[0]
        if "-" not in self.suite and base not in ("sid", "forky"):
            lines.append(f"deb {signed} {self.mirror} {self.suite}-updates {components}")
            lines.append(f"deb {signed} {self.security_mirror} {self.suite}-security {components}")
        return "\n".join(lines) + "\n"

    def prepare(self) -> None:
        if self.suite not in KNOWN_SUITES:
            raise UserError(
                f"unknown Debian suite {self.suite!r} (known: {', '.join(KNOWN_SUITES)})"
            )
        if not ARCHIVE_KEYRING.exists():
            raise ToolError(f"{ARCHIVE_KEYRING} missing: apt-get install debian-archive-keyring")
        for sub in (
            "state/lists/partial",
            "cache/archives/partial",
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/sources.list.d",
            "etc/trusted.gpg.d",
        ):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        status = self.root / "state/status"
        if not status.exists():
            status.touch()
        _write_if_changed(self.root / "etc/sources.list", self._sources())
        config = "\n".join(
            [
                f'Dir::State "{self.root}/state";',
                f'Dir::State::status "{status}";',
                f'Dir::Cache "{self.root}/cache";',
                f'Dir::Etc "{self.root}/etc";',
                f'Dir::Etc::SourceList "{self.root}/etc/sources.list";',
                f'Dir::Etc::SourceParts "{self.root}/etc/sources.list.d";',
                f'Dir::Etc::TrustedParts "{self.root}/etc/trusted.gpg.d";',
                f'APT::Architecture "{self.arch}";',
                f'APT::Architectures {{ "{self.arch}"; }};',
                'Acquire::Languages "none";',
                'APT::Install-Recommends "false";',
                'APT::Install-Suggests "false";',
                'Acquire::Retries "3";',
                'Debug::NoLocking "true";',
                "",
            ]
        )
        _write_if_changed(self.config_file, config)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["APT_CONFIG"] = str(self.config_file)
        env["LC_ALL"] = "C.UTF-8"
        env["DEBIAN_FRONTEND"] = "noninteractive"
        return env

    def _apt(
        self, args: Sequence[str], cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        # apt takes its own lock and fails at once when another apt holds it; builds of
        # several images (parallel tests, two terminals) share this state, so they queue.
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.root / "appliancekit.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                return subprocess.run(
                    list(args), env=self._env(), cwd=cwd, capture_output=True, text=True,
                    check=False,
                )
        except FileNotFoundError as exc:
            raise ToolError(f"{args[0]} not found: apt-get install apt") from exc

    def lists_age(self) -> float | None:
        stamp = self.root / "state/updated"
        if not stamp.exists():
            return None
        return time.time() - stamp.stat().st_mtime

    def update(self, *, force: bool = False) -> bool:
        """Refresh the indexes if missing, stale or forced. Returns whether it ran.

        A mirror mid-sync serves an index that does not match its signed Release file; apt
        then keeps the old verified one or none. That is fatal for the suite itself, but for
        its -updates/-security companions the build goes on from the suite alone, and the
        gap is recorded (`missing_indexes`) for the build to report and the manifest to
        carry: a release pipeline can refuse such a build, a user on a flaky mirror still
        gets an image.
        """
        self.prepare()
        age = self.lists_age()
        if not force and age is not None and age < INDEX_MAX_AGE_SECONDS:
            return False
        problems: list[str] = []
        for attempt in range(UPDATE_ATTEMPTS):
            result = self._apt(["apt-get", "update", "-q"])
            problems = _update_problems(result)
            if not problems:
                self._missing_file.unlink(missing_ok=True)
                (self.root / "state/updated").touch()
                return True
            # A mirror mid-sync serves an inconsistent index for a while; back off and retry.
            if attempt + 1 < UPDATE_ATTEMPTS:
                time.sleep(min(30, 3 * 2**attempt))
        companions = [p for p in problems if self._is_companion_problem(p)]
        if companions and len(companions) == len(problems) and self._has_suite_index():
            self._missing_file.write_text(json.dumps(companions, indent=1) + "\n")
            (self.root / "state/updated").touch()
            return True
        # apt's "E:" lines say why; its "Err:" lines only name the index
        reason = next((p for p in problems if not p.startswith("Err:")), problems[0])
        raise ToolError(
            f"apt-get update for {self.suite}/{self.arch} failed after {UPDATE_ATTEMPTS} "
            f"attempts: {reason}"
        )

    @property
    def _missing_file(self) -> Path:
        return self.root / "state/missing-indexes.json"

    def missing_indexes(self) -> list[str]:
        """apt's messages for the -updates/-security indexes the last update could not
        verify (the build went on without them)."""
        try:
            return list(json.loads(self._missing_file.read_text()))
        except FileNotFoundError:
            return []

    def release_dates(self) -> dict[str, str]:
        """Each index's `Date:` from its signed Release file, as the last update saw it:
        the archive state the resolution came from."""
        base = self.suite
        dists = (
            [base]
            if "-" in base or base in ("sid", "forky")
            else [base, f"{base}-updates", f"{base}-security"]
        )
        lists = self.root / "state/lists"
        dates = {}
        for dist in dists:
            for release in sorted(lists.glob(f"*_dists_{dist}_InRelease")):
                for line in release.read_text(errors="replace").splitlines():
                    if line.startswith("Date:"):
                        dates[dist] = line.split(":", 1)[1].strip()
                        break
        return dates

    def _is_companion_problem(self, problem: str) -> bool:
        dists = problem_dists(problem)
        companions = {f"{self.suite}-updates", f"{self.suite}-security"}
        return bool(dists) and dists <= companions

    def _has_suite_index(self) -> bool:
        lists = self.root / "state/lists"
        return any(lists.glob(f"*_dists_{self.suite}_main_binary-{self.arch}_Packages"))

    def _lists_signature(self) -> list[tuple[str, int, int]]:
        lists = self.root / "state/lists"
        return sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in lists.glob("*") if p.is_file()
        )

    def resolve(self, packages: Iterable[str]) -> list[DebPackage]:
        """The dependency closure of `packages` for this architecture, without recommends.

        The status file is empty, so apt treats nothing as installed and lists everything.
        Results are cached per package set and index state: the same indexes always give
        the same answer, and a no-op rebuild should not spend its time in apt.
        """
        names = sorted(set(packages))
        if not names:
            return []
        cached = self.root / "resolved" / f"{fingerprint(names, self._lists_signature())}.json"
        if cached.exists():
            return [DebPackage(**entry) for entry in json.loads(cached.read_text())]
        resolved = self._resolve(names)
        _write_if_changed(cached, json.dumps([asdict(p) for p in resolved], sort_keys=True))
        return resolved

    def _resolve(self, names: list[str]) -> list[DebPackage]:
        result = self._apt(["apt-get", "install", "-s", "-q", "--no-install-recommends", *names])
        if result.returncode != 0:
            raise UserError(
                f"cannot resolve Debian packages for {self.suite}/{self.arch}: "
                f"{_first_error(result.stderr or result.stdout)}",
                field="debian.packages",
            )
        pins = _parse_simulated_installs(result.stdout)
        return self.describe(pins)

    def describe(self, pins: Sequence[tuple[str, str]]) -> list[DebPackage]:
        """Look up file name, size and sha256 of exact (name, version) pairs in the index."""
        if not pins:
            return []
        result = self._apt(
            ["apt-cache", "show", "--no-all-versions", *(f"{n}={v}" for n, v in pins)]
        )
        if result.returncode != 0:
            raise ToolError(f"apt-cache show failed: {_first_error(result.stderr)}")
        wanted = set(pins)
        found: dict[tuple[str, str], DebPackage] = {}
        for stanza in _deb822_stanzas(result.stdout):
            key = (stanza.get("Package", ""), stanza.get("Version", ""))
            if key in wanted and key not in found:
                found[key] = DebPackage(
                    name=key[0],
                    version=key[1],
                    architecture=stanza["Architecture"],
                    sha256=stanza["SHA256"],
                    size=int(stanza["Size"]),
                    filename=stanza["Filename"],
                    installed_size=int(stanza.get("Installed-Size", "0")) * 1024,
                )
        missing = wanted - found.keys()
        if missing:
            raise ToolError(f"index lists no file for {sorted(missing)}")
        return sorted(found.values())

    def fetch(self, packages: Sequence[DebPackage]) -> list[FetchedDeb]:
        """Download what is not cached yet into the content-addressed cache (verified)."""
        todo = [p for p in packages if not self.cache.deb_path(p.sha256).exists()]
        if todo:
            with tempfile.TemporaryDirectory(dir=self.cache.tmp_dir()) as tmp:
                result = self._apt(
                    ["apt-get", "download", "-q", *(f"{p.name}={p.version}" for p in todo)],
                    cwd=Path(tmp),
                )
                if result.returncode != 0:
                    raise ToolError(f"apt-get download failed: {_first_error(result.stderr)}")
                by_name = {p.name: p for p in todo}
                for deb in Path(tmp).glob("*.deb"):
                    name = deb.name.split("_", 1)[0]
                    package = by_name.pop(name, None)
                    if package is None:
                        continue
                    _store_verified(deb, package, self.cache.deb_path(package.sha256))
                if by_name:
                    raise ToolError(f"apt-get download did not produce {sorted(by_name)}")
        return [FetchedDeb(p, self.cache.deb_path(p.sha256)) for p in packages]


def select_kernel_packages(closure: Sequence[DebPackage]) -> list[DebPackage]:
    """From a kernel metapackage's closure keep the image packages only.

    The rest (initramfs-tools, kmod, systemd, ...) is there for maintainer scripts, which
    appliancekit never runs: it builds its own initramfs.
    """
    kernels = [p for p in closure if p.name.startswith("linux-image-")]
    if not kernels:
        raise ToolError("kernel package resolved to no linux-image-* package")
    return kernels


def _store_verified(downloaded: Path, package: DebPackage, destination: Path) -> None:
    digest = sha256_file(downloaded)
    if digest != package.sha256:
        raise ToolError(
            f"{package.name}_{package.version}: sha256 {digest} does not match the signed index "
            f"({package.sha256})"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_suffix(".part")
    shutil.move(downloaded, tmp)
    os.replace(tmp, destination)


_INST_RE = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ")


def _parse_simulated_installs(output: str) -> list[tuple[str, str]]:
    pins = []
    for line in output.splitlines():
        match = _INST_RE.match(line)
        if match:
            name = match.group(1).split(":", 1)[0]
            pins.append((name, match.group(2)))
    return pins


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif line[0] in " \t":
            if key:
                current[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def problem_dists(problem: str) -> set[str]:
    """The suites an apt error line is about: "E: Failed to fetch .../dists/SUITE/..." or
    "Err:4 URI SUITE/COMPONENT ARCH Packages"."""
    dists = set(re.findall(r"/dists/([^/\s]+)/", problem))
    err = re.match(r"Err:\d+\s+\S+\s+([^/\s]+)", problem)
    if err:
        dists.add(err.group(1))
    return dists


def _update_problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines describing why an index update failed; empty if it worked."""
    text = (result.stderr or "") + "\n" + (result.stdout or "")
    problems = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("E: Some index files failed to download"):
            continue  # the summary of the lines before it
        if stripped.startswith(("E:", "Err:")) or (
            stripped.startswith("W:")
            and ("Failed to fetch" in stripped or "unexpected size" in stripped)
        ):
            problems.append(stripped)
    if not problems and result.returncode != 0:
        problems.append(f"exit code {result.returncode}")
    return problems


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("E:"):
            return line[2:].strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def _write_if_changed(path: Path, content: str) -> None:
    if path.exists() and path.read_text() == content:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(content)
    os.replace(tmp, path)
