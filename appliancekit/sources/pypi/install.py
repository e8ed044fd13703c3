"""What the build adds for a recipe's [python] section: the fetched, unpacked and compiled
wheels, and what of the Python installation to keep."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from appliancekit.cache import Cache
from appliancekit.errors import UserError
from appliancekit.minimise import ClosureRequest
from appliancekit.sources.debian import DebianSourceFor, DebPackage
from appliancekit.sources.pypi.bytecode import compile_bytecode
from appliancekit.sources.pypi.download import fetch
from appliancekit.sources.pypi.keep import kept_files, python_roots, under
from appliancekit.sources.pypi.plan import PythonPlan
from appliancekit.sources.pypi.tags import SUITE_GLIBC, target_glibc, wheel_glibc
from appliancekit.sources.pypi.wheel import PrefixedPackage, unpack_wheel
from appliancekit.sources.unpack import UnpackedPackage


@dataclass(frozen=True)
class PythonInstall:
    """What the build adds for a recipe's [python] section."""

    packages: tuple[UnpackedPackage, ...] = ()  # wheels + bytecode, like unpacked .debs
    requests: tuple[ClosureRequest, ...] = ()
    manifest: tuple[dict[str, object], ...] = field(default_factory=tuple)


def install(
    cache: Cache,
    python: PythonPlan | None,
    suite: str,
    debian: Sequence[UnpackedPackage],
    debian_for: DebianSourceFor | None = None,
) -> PythonInstall:
    """Fetch, verify and unpack the wheels, compile their bytecode, and say what to keep."""
    if python is None:
        return PythonInstall()
    by_name = {u.package.name: u.package for u in debian}
    interpreter_package = f"python{python.version}-minimal"
    if interpreter_package not in by_name:
        raise UserError(
            f"[python] version {python.version} needs {interpreter_package} "
            f"(and libpython{python.version}-stdlib) in debian.packages",
            file=python.lock_file.parent / "recipe.toml",
            field="debian.packages",
        )
    glibc = target_glibc(by_name.get("libc6"), suite)
    for wheel in python.wheels:
        needs = wheel_glibc(wheel.filename)
        if needs is not None and needs > glibc:
            raise UserError(
                f"{wheel.filename} needs glibc {needs[0]}.{needs[1]}, {suite} has "
                f"{glibc[0]}.{glibc[1]}",
                file=python.lock_file,
            )
    paths = fetch(cache, python, glibc)
    wheels = [unpack_wheel(cache, w, paths[w], python.site) for w in python.wheels]
    wheels = [
        PrefixedPackage(
            replace_size(u.package, paths[u.package].stat().st_size), u.root, u.files, u.prefix
        )
        for u in wheels
    ]
    python_debs = [u for u in debian if any(under(f.path, python_roots(python)) for f in u.files)]
    packages: list[UnpackedPackage] = list(wheels)
    bytecode = compile_bytecode(cache, python, suite, [*python_debs, *wheels], debian_for)
    if bytecode is not None:
        packages.append(bytecode)
    keep = kept_files(python, [*python_debs, *packages])
    if bytecode is not None and not python.section.sources:  # type: ignore[attr-defined]
        # sources whose bytecode compiled are left out (a failed one keeps its source)
        compiled = {
            f.path[: -len(".pyc")] + ".py"
            for f in bytecode.files
            if f.kind == "file" and "/__pycache__/" not in f.path
        }
        keep = [path for path in keep if path not in compiled]
    request = ClosureRequest(
        executables=(f"/usr/bin/python{python.version}",),
        keep=tuple(keep),
        origin=f"{python.lock_file.parent / 'recipe.toml'}: python",
    )
    manifest = tuple(w.package.to_json() | {"role": "pypi"} for w in wheels)
    return PythonInstall(tuple(packages), (request,), manifest)


def installed_size(cache: Cache, python: PythonPlan | None) -> int:
    """Bytes of the plan's wheels unpacked, as `pip install` would lay them out (without
    bytecode): the wheels' share of a normal installation, for size comparisons."""
    if python is None:
        return 0
    glibc = SUITE_GLIBC["trixie"]
    paths = fetch(cache, python, glibc)
    return sum(
        item.size
        for wheel in python.wheels
        for item in unpack_wheel(cache, wheel, paths[wheel], python.site).files
    )


def replace_size(package: DebPackage, size: int) -> DebPackage:
    from dataclasses import replace

    return replace(package, size=size)
