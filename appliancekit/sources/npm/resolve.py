"""Making a lock: npm resolves the closure once (metadata only, scripts off) and its
package-lock.json becomes the recipe's lock. The only step that talks to the registry
besides downloading tarballs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from appliancekit.errors import ToolError
from appliancekit.sources.npm.lockfile import LockedPackage, NpmLock, parse_pin
from appliancekit.sources.npm.registry import registry_url, relative_tarball

# npm's words for a name or version the registry does not have
_NOT_FOUND = (
    re.compile(r"'(?P<pin>[^']+)' is not in this registry"),
    re.compile(r"404 Not Found - GET \S+/(?P<pin>[^/\s]+) - "),
    re.compile(r"No matching version found for (?P<pin>\S+)\."),
)


class NotInRegistry(Exception):
    """The registry has no such package or version (the requirement is bad input)."""

    def __init__(self, requirement: str, message: str) -> None:
        super().__init__(message)
        self.requirement = requirement


def lock(
    requirements: Sequence[str],
    registry: str | None = None,
    overrides: Sequence[tuple[str, str]] = (),
    log: Callable[[str], None] | None = None,
) -> NpmLock:
    """Resolve `requirements` (NAME@VERSION each) with npm and return the lock."""
    say = log or (lambda _msg: None)
    base = registry or registry_url()
    npm = shutil.which("npm")
    if npm is None:
        raise ToolError("npm is not installed (scripts/setup-host.sh installs it)")
    pins = [parse_pin(r) for r in requirements]
    with tempfile.TemporaryDirectory(prefix="ak-npm-") as tmp:
        work = Path(tmp)
        manifest = {
            "name": "appliancekit-lock",
            "version": "0.0.0",
            "private": True,
            "dependencies": {name: version for name, version in pins},
            "overrides": dict(overrides),
        }
        (work / "package.json").write_text(json.dumps(manifest))
        say(f"resolving {', '.join(requirements)}")
        result = subprocess.run(
            [
                npm,
                "install",
                "--package-lock-only",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--fetch-retries=0",
                f"--registry={base}",
            ],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        output = result.stderr + result.stdout
        if result.returncode != 0:
            for pattern in _NOT_FOUND:
                found = pattern.search(output)
                if found:
                    raise NotInRegistry(_requirement_for(found["pin"], requirements), output)
            lines = [line for line in output.splitlines() if "npm error" in line]
            raise ToolError(
                f"npm could not resolve {', '.join(requirements)}: "
                + (lines[0].replace("npm error ", "") if lines else output.strip()[-300:])
            )
        data = json.loads((work / "package-lock.json").read_text())
    packages = tuple(_packages(data, base, say))
    return NpmLock(tuple(requirements), packages, tuple(sorted(overrides)))


def _requirement_for(pin: str, requirements: Sequence[str]) -> str:
    """The requirement an npm error names (by pin or by package name)."""
    pin = pin.replace("%2f", "/").replace("%2F", "/")
    for requirement in requirements:
        name, _version = parse_pin(requirement)
        if pin in (requirement, name) or pin.startswith(name + "@"):
            return requirement
    return pin


def _packages(data: dict, registry: str, say: Callable[[str], None]) -> list[LockedPackage]:
    entries = data.get("packages")
    if not isinstance(entries, dict):
        raise ToolError("npm wrote a package-lock.json without packages (lockfileVersion < 2)")
    out = []
    for path, entry in sorted(entries.items()):
        if not path or entry.get("inBundle"):
            continue  # the root, and packages shipped inside their parent's tarball
        name = entry.get("name") or path.rsplit("node_modules/", 1)[-1]
        version = entry.get("version", "")
        integrity = entry.get("integrity", "")
        tarball = relative_tarball(entry.get("resolved", ""), registry, name, version)
        if entry.get("link") or not version or not integrity or tarball is None:
            if entry.get("optional"):
                say(f"  leaving out optional {path}: not a registry tarball with integrity")
                continue
            raise ToolError(
                f"{path}: not a registry package with an integrity hash "
                f"({entry.get('resolved') or 'no tarball'}); appliancekit installs only those"
            )
        out.append(
            LockedPackage(
                path=path,
                name=name,
                version=version,
                tarball=tarball,
                integrity=integrity,
                os=tuple(entry.get("os", ())),
                cpu=tuple(entry.get("cpu", ())),
                optional=bool(entry.get("optional")),
                install_script=bool(entry.get("hasInstallScript")),
            )
        )
    return out
