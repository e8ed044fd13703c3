"""Where the npm registry is, and where a package's tarball lives in it.

The registry is the host's npm configuration (`npm config get registry`), or
APPLIANCEKIT_NPM_REGISTRY (the tests' local registry). Locks hold tarball paths relative
to it, so a lock works against any mirror of the registry."""

from __future__ import annotations

import os
import shutil
import subprocess

from appliancekit.errors import ToolError

REGISTRY_ENV = "APPLIANCEKIT_NPM_REGISTRY"


def registry_url() -> str:
    """The registry's base URL, ending in '/'."""
    url = os.environ.get(REGISTRY_ENV, "").strip()
    if not url:
        npm = shutil.which("npm")
        if npm is None:
            raise ToolError(
                f"npm is not installed: install it (scripts/setup-host.sh) or set {REGISTRY_ENV}"
            )
        result = subprocess.run(
            [npm, "config", "get", "registry"], capture_output=True, text=True, check=False
        )
        url = result.stdout.strip()
        if result.returncode != 0 or not url.startswith(("http://", "https://")):
            raise ToolError(f"npm config get registry failed: {result.stderr.strip() or url}")
    return url if url.endswith("/") else url + "/"


def default_tarball(name: str, version: str) -> str:
    """npm's layout: NAME/-/BASENAME-VERSION.tgz (BASENAME without the @scope/)."""
    return f"{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"


def relative_tarball(resolved: str, registry: str, name: str, version: str) -> str | None:
    """The tarball path relative to `registry`; None when it is not served by it."""
    if not resolved:
        return default_tarball(name, version)
    if resolved.startswith(registry):
        return resolved[len(registry) :]
    return None
