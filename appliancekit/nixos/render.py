"""Render a recipe x board as a NixOS flake directory.

    OUT/flake.nix          inputs.nixpkgs pinned by revision; nixosConfigurations.<recipe>-<board>;
                           packages.<build system>.image (the board's disk image)
    OUT/flake.lock         the same revision with its narHash
    OUT/configuration.nix  platform, host name, state version; imports the three modules below
    OUT/appliance.nix      the sealed appliance: no users/passwords, no sshd, no nix daemon,
                           no default packages, tmpfs root, store on a read-only partition
                           (erofs + dm-verity with the root hash in the UKI where the board
                           allows), all state on /data
    OUT/board.nix          the board: nixpkgs' own image module plus what the board needs
    OUT/recipe.nix         the recipe's [nixos] options (settings substituted)
    OUT/recipe/*.nix       extra modules shipped in recipes/NAME/nixos/ (package pins, ...)
    OUT/secrets.nix        the unit that fills /data/appliance/secrets at boot (appliancekit.
    OUT/secrets.sh         nixos.secrets), when the recipe's options name a secret
    OUT/files/NAME/        copies of `path` settings (e.g. the homepage's site)
    OUT/appliance.json     what appliancekit needs afterwards: probes, ports, pin, seal, ...

Recipe `[nixos]` values: TOML strings, numbers, booleans and arrays become Nix values; strings
are jinja2 templates over `settings` (the resolved settings; `path` settings render as
`./files/NAME`) and `secrets` (`{{ secrets.NAME }}` is the path of that secret setting's file on
the data partition, /data/appliance/secrets/NAME, filled at every boot from the settings.env
that `flash` writes to the boot partition, or generated, and never placed in the Nix store). A string starting with `nix:` is a Nix expression, e.g.
`"nix:pkgs.garage"`. Every option path, the recipe's and the renderer's own, is checked against
the option list of the pinned nixpkgs (appliancekit.nixos.options).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from appliancekit.board import Board, NixosImage
from appliancekit.errors import UserError
from appliancekit.nixos.boards import (
    ESP_LABEL,
    FIRMWARE_LABEL,
    VERITY,
    BoardMapping,
    board_mapping,
)
from appliancekit.nixos.nixexpr import OptionPath, Raw, assignments, expr, format_option
from appliancekit.nixos.nixexpr import parse_option as parse_option_text
from appliancekit.nixos.nixexpr import string as nix_string
from appliancekit.nixos.options import OptionSet, bundled_options
from appliancekit.nixos.pin import NIXPKGS, STATE_VERSION
from appliancekit.nixos.secrets import SCRIPT, UNIT, SecretFile, device_unit, load_secret_files
from appliancekit.nixos.secrets import render_script as render_secrets_script
from appliancekit.recipe import Recipe, ResolvedSettings, SettingKind
from appliancekit.tomlsource import TomlSource

DATA = "/data"
SECRETS_DIR = "/data/appliance/secrets"
RAW_PREFIX = "nix:"
FILES = ("flake.nix", "flake.lock", "configuration.nix", "appliance.nix", "board.nix", "recipe.nix")
MODULE_ARGS = "{ config, lib, pkgs, modulesPath, ... }:"


@dataclass(frozen=True)
class NixRender:
    """A rendered flake directory and what it builds."""

    directory: Path
    name: str  # nixosConfigurations attribute: RECIPE-BOARD
    system: str  # nixpkgs.hostPlatform
    build_system: str  # flake packages.<build_system>.image
    image_attr: str  # config.system.build.<image_attr>
    seal: str  # verity-store | read-only-store
    board_modules: tuple[str, ...]  # nixpkgs image modules imported, relative to modulesPath
    options: tuple[str, ...]  # every option path the rendered modules set
    files: tuple[str, ...]  # files written, relative to `directory`

    @property
    def flake_ref(self) -> str:
        return f"path:{self.directory}#packages.{self.build_system}.image"


@dataclass
class _Module:
    comment: str
    imports: list[object] = field(default_factory=list)
    lets: list[tuple[str, str]] = field(default_factory=list)
    options: list[tuple[OptionPath, object]] = field(default_factory=list)

    def set(self, option: str, value: object) -> None:
        self.options.append((parse_option_text(option), value))

    def text(self) -> str:
        out = [f"# {line}".rstrip() for line in self.comment.strip().splitlines()]
        out.append(MODULE_ARGS)
        if self.lets:
            out.append("let")
            out += [f"  {name} = {value};" for name, value in self.lets]
            out.append("in")
        out.append("{")
        if self.imports:
            out.append(f"  imports = {expr(self.imports, 1)};")
            out.append("")
        out.append(assignments(self.options))
        out.append("}")
        return "\n".join(out) + "\n"


def _lib(call: str, value: object) -> Raw:
    return Raw(f"lib.{call} {_paren(expr(value, 1))}")


def _paren(text: str) -> str:
    return text if text[:1] in '"[{' or text.replace(".", "").isalnum() else f"({text})"


def _modules_path(rel: str) -> Raw:
    return Raw(f'"${{modulesPath}}/{rel}"')


# --------------------------------------------------------------------------- public API


def render_flake(
    recipe: Recipe,
    board: Board,
    settings: ResolvedSettings,
    out_dir: Path,
    *,
    options: OptionSet | None = None,
) -> NixRender:
    """Write the flake for `recipe` on `board` into `out_dir` (created; must be empty or absent).

    Raises UserError for a recipe option that is not a NixOS option at the pinned nixpkgs (with
    file:line and a suggestion), for secret settings used as values, and for boards without a
    NixOS mapping.
    """
    options = options or bundled_options()
    mapping = board_mapping(board)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} exists and is not empty; refusing to render a flake into it")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{recipe.name}-{board.name}"

    context = _Context(recipe, settings, out_dir)
    recipe_module = _recipe_module(recipe, context, options)
    appliance_module = _appliance_module(recipe, board, mapping)
    board_module = _board_module(board, mapping)
    secret_files = _secret_files(recipe, context.used_secrets)
    secrets_module = _secrets_module(mapping) if secret_files else None
    config_module = _configuration_module(
        recipe, board, mapping, name, with_secrets=secrets_module is not None
    )
    emitted = [*config_module.options, *appliance_module.options, *board_module.options]
    if secrets_module is not None:
        emitted += secrets_module.options
    for path, _ in emitted:  # the renderer's own options: a miss here is a bug in this module
        problem = options.problem(path)
        if problem:
            raise AssertionError(f"renderer emits an option the list does not know: {problem}")

    files: dict[str, str] = {
        "flake.nix": _flake_nix(recipe, board, mapping, name),
        "flake.lock": json.dumps(_flake_lock(), indent=2, sort_keys=True) + "\n",
        "configuration.nix": config_module.text(),
        "appliance.nix": appliance_module.text(),
        "board.nix": board_module.text(),
        "recipe.nix": recipe_module.text(),
    }
    if secrets_module is not None:
        files["secrets.nix"] = secrets_module.text()
        files[SCRIPT] = render_secrets_script(secret_files)
    for rel, text in files.items():
        (out_dir / rel).write_text(text)
    written = list(files) + context.copied + _copy_recipe_modules(recipe, out_dir)
    all_options = tuple(format_option(p) for p, _ in [*emitted, *recipe_module.options])
    result = NixRender(
        directory=out_dir,
        name=name,
        system=mapping.system,
        build_system=mapping.build_system,
        image_attr=mapping.image_attr,
        seal=mapping.seal,
        board_modules=mapping.modules,
        options=all_options,
        files=(),
    )
    (out_dir / "appliance.json").write_text(
        json.dumps(
            _appliance_json(recipe, board, settings, result, secret_files),
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    written.append("appliance.json")
    return NixRender(**{**result.__dict__, "files": tuple(sorted(written))})


def recipe_options(recipe: Recipe) -> list[tuple[OptionPath, Any, tuple[str | int, ...]]]:
    """The recipe's [nixos] options as (option path, TOML value, TOML key path), in file order.

    Read from the TOML text (not Recipe.nixos) so quoted names that contain dots survive: each
    TOML key is itself a Nix attribute path (`'services.nginx.virtualHosts."a.b"'`).
    """
    src = TomlSource.from_file(recipe.source_file)
    raw = src.data.get("nixos") or {}
    out: list[tuple[OptionPath, Any, tuple[str | int, ...]]] = []

    def walk(prefix: OptionPath, keys: tuple[str | int, ...], table: Mapping[str, Any]) -> None:
        for key, value in table.items():
            try:
                parts = parse_option_text(key)
            except ValueError as exc:
                raise src.error(("nixos", *keys, key), str(exc)) from None
            if isinstance(value, dict):
                walk(prefix + parts, keys + (key,), value)
            else:
                out.append((prefix + parts, value, ("nixos", *keys, key)))

    walk((), (), raw)
    return out


def check_recipe_options(recipe: Recipe, options: OptionSet | None = None) -> None:
    """UserError (file:line, the option, a did-you-mean) for the first unknown option."""
    options = options or bundled_options()
    src: TomlSource | None = None
    for path, _value, keys in recipe_options(recipe):
        problem = options.problem(path)
        if problem:
            src = src or TomlSource.from_file(recipe.source_file)
            pin = f" at nixpkgs {NIXPKGS.branch} ({NIXPKGS.short})"
            raise src.error(keys, problem + pin)


# --------------------------------------------------------------------------- settings


class _Context:
    """Jinja2 context for [nixos] values: settings, secrets, copied path settings."""

    def __init__(self, recipe: Recipe, settings: ResolvedSettings, out_dir: Path) -> None:
        self.recipe = recipe
        self.values = settings.as_dict()
        self.out_dir = out_dir
        self.copied: list[str] = []
        self.env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        self.kinds = {s.name: s for s in recipe.settings}
        self.used_secrets: set[str] = set()  # secret settings the options name

    def setting(self, name: str) -> object:
        spec = self.kinds.get(name)
        if spec is None:
            raise KeyError(name)
        if spec.secret:
            raise UserError(
                f"secret setting {name!r} is never baked into the image; use "
                f"{{{{ secrets.{name} }}}} (the path of its file on the data partition)",
                file=self.recipe.source_file,
                field=f"settings.{name}",
            )
        value = self.values.get(name)
        if spec.kind == SettingKind.PATH:
            return self._copy(name, Path(str(value)))
        if value in ("", None) and spec.per_device:
            raise UserError(
                f"setting {name!r} is per-device, but the NixOS backend needs its value when "
                f"the image is built (use -s {name}=VALUE)",
                file=self.recipe.source_file,
                field=f"settings.{name}",
            )
        return value

    def _copy(self, name: str, source: Path) -> str:
        rel = f"files/{name}"
        target = self.out_dir / rel
        if not target.exists():
            if source.is_dir():
                shutil.copytree(source, target, symlinks=False)
                for dirpath, _dirs, names in sorted(os.walk(target)):
                    self.copied += sorted(
                        str((Path(dirpath) / n).relative_to(self.out_dir)) for n in names
                    )
            elif source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                self.copied.append(rel)
            else:
                raise UserError(
                    f"path setting {name!r}: {source} does not exist",
                    file=self.recipe.source_file,
                    field=f"settings.{name}",
                )
        return f"./{rel}"

    def render(self, template: str, where: str) -> str:
        context = self

        class _Settings:
            def __getattr__(self, name: str) -> object:
                try:
                    return context.setting(name)
                except KeyError:
                    raise jinja2.UndefinedError(f"no setting {name!r}") from None

        class _Secrets:
            def __getattr__(self, name: str) -> str:
                spec = context.kinds.get(name)
                if spec is None or not spec.secret:  # secret and users kinds
                    raise jinja2.UndefinedError(f"no secret setting {name!r}")
                context.used_secrets.add(name)
                return f"{SECRETS_DIR}/{name}"

        try:
            return self.env.from_string(template).render(settings=_Settings(), secrets=_Secrets())
        except jinja2.TemplateError as exc:
            raise UserError(
                f"{where}: cannot render {template!r}: {exc}", file=self.recipe.source_file
            ) from None


def _nix_value(value: Any, context: _Context, where: str) -> object:
    if isinstance(value, str):
        text = context.render(value, where) if "{{" in value or "{%" in value else value
        if text.startswith(RAW_PREFIX):
            return Raw(text[len(RAW_PREFIX) :].strip())
        return text
    if isinstance(value, list | tuple):
        return [_nix_value(v, context, where) for v in value]
    if isinstance(value, dict):
        return {k: _nix_value(v, context, where) for k, v in value.items()}
    if isinstance(value, bool | int | float):
        return value
    raise UserError(f"{where}: a {type(value).__name__} cannot be a NixOS option value")


# --------------------------------------------------------------------------- modules


def _recipe_module(recipe: Recipe, context: _Context, options: OptionSet) -> _Module:
    check_recipe_options(recipe, options)
    module = _Module(
        f"{recipe.name}: the [nixos] options of recipes/{recipe.name}/recipe.toml\n"
        "(generated by appliancekit; edit the recipe, not this file)"
    )
    module.imports = [Raw(f"./recipe/{p.name}") for p in _recipe_module_files(recipe)]
    for path, value, _keys in recipe_options(recipe):
        where = f"nixos.{format_option(path)}"
        path = tuple(context.render(p, where) if "{{" in p else p for p in path)
        module.options.append((path, _nix_value(value, context, where)))
    return module


def _recipe_module_files(recipe: Recipe) -> list[Path]:
    folder = recipe.directory / "nixos"
    return sorted(folder.glob("*.nix")) if folder.is_dir() else []


def _copy_recipe_modules(recipe: Recipe, out_dir: Path) -> list[str]:
    files = _recipe_module_files(recipe)
    if files:
        (out_dir / "recipe").mkdir(exist_ok=True)
    for path in files:
        shutil.copyfile(path, out_dir / "recipe" / path.name)
    return [f"recipe/{p.name}" for p in files]


def _configuration_module(
    recipe: Recipe, board: Board, mapping: BoardMapping, name: str, *, with_secrets: bool
) -> _Module:
    imports = ["./appliance.nix", "./board.nix", "./recipe.nix"]
    if with_secrets:
        imports.append("./secrets.nix")
    module = _Module(
        f"{name}: {recipe.summary}\n"
        f"board {board.name} ({board.arch.value}, {board.boot.value}); "
        f"nixpkgs {NIXPKGS.branch} {NIXPKGS.short}",
        imports=[Raw(p) for p in imports],
    )
    module.set("nixpkgs.hostPlatform", mapping.system)
    if mapping.cross:
        module.set("nixpkgs.buildPlatform", mapping.build_system)
    module.set("networking.hostName", recipe.name)
    module.set("system.stateVersion", STATE_VERSION)
    module.set("system.image.id", recipe.name)
    module.set("system.image.version", "1")
    return module


def _appliance_module(recipe: Recipe, board: Board, mapping: BoardMapping) -> _Module:
    ports = sorted({*recipe.ports, *(p.port for p in recipe.probes)})
    m = _Module(
        "The sealed appliance, common to every recipe and board: nothing to log in with, "
        "nothing to\nrebuild with, a read-only store, a tmpfs root and all state on /data.",
        imports=[
            _modules_path("profiles/image-based-appliance.nix"),
            _modules_path("profiles/perlless.nix"),
        ],
    )
    # -- no way in, nothing to change the system with
    m.set("nix.enable", False)
    m.set("system.switch.enable", False)
    m.set("system.disableInstallerTools", True)
    m.set("users.mutableUsers", False)
    m.set("users.allowNoPasswordLogin", True)
    m.set("users.users.root.hashedPassword", "!")
    m.set("services.openssh.enable", _lib("mkForce", False))
    m.set("security.sudo.enable", False)
    for unit in ("getty@", "serial-getty@", "autovt@"):
        m.set(f'systemd.services."{unit}".enable', _lib("mkForce", False))
    # -- minimal
    m.set("environment.defaultPackages", [])
    m.set("environment.systemPackages", _lib("mkForce", []))
    m.set("documentation.enable", False)
    m.set("programs.command-not-found.enable", False)
    m.set("boot.enableContainers", False)
    m.set("boot.supportedFilesystems", _lib("mkForce", ["vfat", "ext4", "erofs"]))
    m.set("boot.initrd.supportedFilesystems", _lib("mkForce", ["vfat", "ext4", "erofs"]))
    # -- a small systemd: systemd in the initrd, networkd, no perl at activation
    m.set("boot.initrd.systemd.enable", True)
    m.set("system.etc.overlay.enable", True)
    m.set("system.etc.overlay.mutable", False)
    m.set("services.userborn.enable", True)
    m.set("networking.useNetworkd", True)
    m.set("networking.firewall.allowedTCPPorts", ports)
    m.set("boot.initrd.availableKernelModules", list(mapping.spec.initrd_modules))
    m.set("boot.kernelParams", [f"console={mapping.spec.console}", "panic=10"])
    m.set("boot.loader.grub.enable", False)
    m.set("system.activationScripts.usrbinenv", _lib("mkForce", ""))
    # -- file systems: tmpfs root, read-only store, state on /data
    m.set('fileSystems."/"', _lib("mkForce", {"fsType": "tmpfs", "options": ["mode=0755"]}))
    if mapping.seal == VERITY:
        # the store partition (erofs, dm-verity, root hash in the UKI) is mounted on /usr
        # by systemd's initrd; the store is bind-mounted from there
        m.set('fileSystems."/nix/store"', _bind("/usr/nix/store", "ro"))
        m.set('fileSystems."/data"', _data_fs("/dev/disk/by-partlabel/data"))
        _verity_image(m, board, mapping)
    else:
        m.set('fileSystems."/sealed"', _readonly_store_fs())
        m.set('fileSystems."/nix/store"', _bind("/sealed/nix/store", "ro"))
        m.set('fileSystems."/data"', {**_data_fs(f"{mapping.spec.disk}p3"), "autoFormat": True})
    m.set('fileSystems."/var/lib"', _bind(f"{DATA}/var/lib"))
    for path in recipe.data_paths:
        if path != "/var/lib" and not path.startswith("/var/lib/"):
            m.set(f"fileSystems.{nix_string(path)}", _bind(f"{DATA}{path}"))
    m.set(
        "systemd.tmpfiles.settings.appliance-data",
        {
            f"{DATA}/var/lib": {"d": {"mode": "0755"}},
            # 0711: each service reaches its own file (0400, its own), nobody lists them
            SECRETS_DIR: {"d": {"mode": "0711"}},
            **{
                f"{DATA}{p}": {"d": {"mode": "0755"}}
                for p in recipe.data_paths
                if not p.startswith("/var/lib")
            },
        },
    )
    return m


def _secret_files(recipe: Recipe, used: set[str]) -> list[SecretFile]:
    secret = {s.name for s in recipe.settings if s.secret}
    specs = load_secret_files(recipe.directory / "nixos", secret)
    return [specs[name] for name in sorted(used)]


def _secrets_module(mapping: BoardMapping) -> _Module:
    """appliancekit-secrets.service: fills SECRETS_DIR before sysinit.target, i.e. before every
    service with default dependencies, once /data is mounted (in the initrd) and userborn has
    made the users the files belong to."""
    unit = f"systemd.services.{UNIT}"
    device = mapping.boot_partition
    m = _Module(
        "Per-device secrets: settings.env on the boot partition (written by `appliancekit flash`)\n"
        f"-> {SECRETS_DIR}, or generated where the service allows; see secrets.sh"
    )
    m.set(f"{unit}.description", f"Per-device secrets into {SECRETS_DIR}")
    m.set(f"{unit}.wantedBy", ["sysinit.target"])
    m.set(f"{unit}.before", ["sysinit.target", "shutdown.target"])
    m.set(f"{unit}.after", ["local-fs.target", "userborn.service", device_unit(device)])
    m.set(f"{unit}.wants", [device_unit(device)])
    m.set(
        f"{unit}.unitConfig",
        {"DefaultDependencies": False, "RequiresMountsFor": [SECRETS_DIR]},
    )
    # the boot partition is mounted in the unit's own mount namespace: gone when it exits
    m.set(
        f"{unit}.serviceConfig",
        {"Type": "oneshot", "RemainAfterExit": True, "PrivateMounts": True},
    )
    m.set(f"{unit}.path", [Raw("pkgs.coreutils"), Raw("pkgs.util-linux")])
    m.set(
        f"{unit}.script",
        Raw(
            "''\n"
            "    mkdir -p /run/appliancekit-boot\n"
            "    settings=/run/appliancekit-boot/settings.env\n"
            f"    if ! mount -t vfat -o ro,nosuid,nodev,noexec {device} /run/appliancekit-boot; then\n"
            f'      echo "appliancekit-secrets: no boot partition at {device}" >&2\n'
            "      settings=/dev/null\n"
            "    fi\n"
            f'    ${{pkgs.runtimeShell}} ${{./{SCRIPT}}} "$settings" {SECRETS_DIR}\n'
            "  ''"
        ),
    )
    return m


def _bind(source: str, *extra: str) -> dict[str, object]:
    return {
        "device": source,
        "fsType": "none",
        "options": ["bind", *extra],
        "depends": [DATA] if source.startswith(DATA) else [],
    }


def _data_fs(device: str) -> dict[str, object]:
    return {
        "device": device,
        "fsType": "ext4",
        "neededForBoot": True,
        "autoResize": True,
        "options": ["nosuid", "nodev"],
    }


def _readonly_store_fs() -> dict[str, object]:
    return {
        "device": "/dev/disk/by-label/NIXOS_SD",
        "fsType": "ext4",
        "neededForBoot": True,
        "options": ["ro", "noatime"],
    }


def _verity_image(m: _Module, board: Board, mapping: BoardMapping) -> None:
    data_mib = max(board.disk.data_size_mib, 256)
    m.set("image.repart.name", Raw("config.system.image.id"))
    m.set("image.repart.verityStore.enable", True)
    # the firmware (UEFI, or U-Boot's EFI on the Pi) starts the UKI as the removable-media
    # default, so no boot loader and no writable boot state are needed
    m.set("image.repart.verityStore.ukiPath", f"/EFI/BOOT/BOOT{mapping.efi_arch}.EFI")
    m.set(
        'image.repart.partitions."00-esp".repartConfig',
        {"Type": "esp", "Format": "vfat", "Label": ESP_LABEL, "SizeMinBytes": "256M"},
    )
    m.set('image.repart.partitions."10-store-verity".repartConfig.Minimize', "best")
    m.set('image.repart.partitions."20-store".repartConfig.Minimize', "best")
    m.set(
        'image.repart.partitions."30-data".repartConfig',
        {
            "Type": "linux-generic",
            "Format": "ext4",
            "Label": "data",
            "SizeMinBytes": f"{data_mib}M",
            "MakeDirectories": "/var/lib /appliance/secrets",
        },
    )
    # first boot: grow the data partition (the last one) to the end of the disk
    m.set("boot.initrd.systemd.repart.enable", True)
    m.set("boot.initrd.systemd.repart.device", mapping.spec.disk)
    m.set('systemd.repart.partitions."30-data"', {"Type": "linux-generic", "Label": "data"})


def _board_module(board: Board, mapping: BoardMapping) -> _Module:
    m = _Module(
        f"Board {board.name}: {board.summary}\n"
        f"nixpkgs image module(s): {', '.join(mapping.modules)}",
        imports=[_modules_path(rel) for rel in mapping.modules],
    )
    if mapping.kind == NixosImage.RASPBERRY_PI:
        # Pi firmware -> U-Boot (ubootRaspberryPi4_64bit, from the sd-image module's firmware
        # set) -> EFI -> the UKI. The firmware files go onto the ESP instead of the
        # sd-image's FIRMWARE partition; the sd-image's ext4 root and extlinux are not used.
        m.lets.append(
            (
                "firmware",
                "pkgs.runCommand \"rpi4-firmware\" { } ''\n"
                "    mkdir -p firmware\n"
                "    ${config.sdImage.populateFirmwareCommands}\n"
                "    cp -r firmware $out\n"
                "  ''",
            )
        )
        m.set('image.repart.partitions."00-esp".contents."/".source', Raw("firmware"))
        m.set("boot.loader.generic-extlinux-compatible.enable", _lib("mkForce", False))
        m.set("sdImage.expandOnBoot", False)
        m.set("hardware.enableRedistributableFirmware", False)
    elif mapping.kind == NixosImage.SUNXI:
        # A10: the sunxi SPL + U-Boot go at 8 KiB, inside the sd-image's 8 MiB gap before the
        # first partition; U-Boot then reads extlinux.conf from the ext4 partition
        m.lets.append(
            (
                "uboot",
                "pkgs.buildUBoot {\n"
                f"    defconfig = {nix_string(mapping.spec.uboot_defconfig or '')};\n"
                '    extraMeta.platforms = [ "armv7l-linux" ];\n'
                '    filesToInstall = [ "u-boot-sunxi-with-spl.bin" ];\n'
                "  }",
            )
        )
        data_mib = max(board.disk.data_size_mib, 256)
        m.set("sdImage.compressImage", False)
        # the FAT partition `flash` writes settings.env to (found by this label at boot)
        m.set("sdImage.firmwarePartitionName", FIRMWARE_LABEL)
        m.set("sdImage.expandOnBoot", False)
        m.set(
            "sdImage.postBuildCommands",
            Raw(
                "''\n"
                "    dd if=${uboot}/u-boot-sunxi-with-spl.bin of=$img bs=1024 seek=8 "
                "conv=notrunc\n"
                f"    # the data partition (formatted at first boot)\n"
                f"    truncate -s +{data_mib}M $img\n"
                '    echo ",,L" | sfdisk --append --no-reread --no-tell-kernel $img\n'
                "  ''"
            ),
        )
        m.set("hardware.enableRedistributableFirmware", False)
    elif mapping.kind == NixosImage.AMAZON:
        # amazon-image.nix brings ENA/NVMe drivers, the serial console and EC2 specifics; the
        # parts that would let anyone in or change the system are switched off
        m.set("ec2.efi", True)
        m.set("boot.growPartition", _lib("mkForce", False))
        m.set("services.amazon-ssm-agent.enable", _lib("mkForce", False))
        m.set("virtualisation.amazon-init.enable", False)
        m.set("systemd.services.fetch-ec2-metadata.enable", _lib("mkForce", False))
        m.set("boot.loader.grub.efiSupport", _lib("mkForce", False))
        m.set("boot.loader.grub.efiInstallAsRemovable", _lib("mkForce", False))
    else:
        m.set("boot.initrd.kernelModules", list(mapping.spec.initrd_modules))
    return m


# --------------------------------------------------------------------------- flake


def _flake_nix(recipe: Recipe, board: Board, mapping: BoardMapping, name: str) -> str:
    q = nix_string
    return (
        "# Generated by appliancekit (NixOS backend); rebuild with\n"
        f"#   nix build .#packages.{mapping.build_system}.image\n"
        "{\n"
        f"  description = {q(f'appliancekit: {recipe.name} on {board.name} ({recipe.summary})')};\n"
        "\n"
        f"  # {NIXPKGS.branch} as of {NIXPKGS.last_modified} (see flake.lock for the narHash)\n"
        f"  inputs.nixpkgs.url = {q(NIXPKGS.url)};\n"
        "\n"
        "  outputs =\n"
        "    { self, nixpkgs }:\n"
        "    {\n"
        f"      nixosConfigurations.{q(name)} = nixpkgs.lib.nixosSystem {{\n"
        "        modules = [ ./configuration.nix ];\n"
        "      };\n"
        "\n"
        f"      packages.{q(mapping.build_system)} = rec {{\n"
        f"        image = self.nixosConfigurations.{q(name)}.config.system.build."
        f"{mapping.image_attr};\n"
        "        default = image;\n"
        "      };\n"
        "    };\n"
        "}\n"
    )


def _flake_lock() -> dict[str, object]:
    return {
        "nodes": {
            "nixpkgs": NIXPKGS.lock_node(),
            "root": {"inputs": {"nixpkgs": "nixpkgs"}},
        },
        "root": "root",
        "version": 7,
    }


def _appliance_json(
    recipe: Recipe,
    board: Board,
    settings: ResolvedSettings,
    render: NixRender,
    secret_files: list[SecretFile],
) -> dict[str, object]:
    from dataclasses import asdict

    secret = {s.name for s in recipe.settings if s.secret}
    return {
        "backend": "nixos",
        "name": render.name,
        "recipe": recipe.name,
        "board": board.name,
        "arch": board.arch.value,
        "boot": board.boot.value,
        "nixpkgs": {"rev": NIXPKGS.rev, "narHash": NIXPKGS.nar_hash, "branch": NIXPKGS.branch},
        "system": render.system,
        "build_system": render.build_system,
        "image_attr": render.image_attr,
        "image_modules": list(render.board_modules),
        "seal": render.seal,
        "settings": {k: ("" if k in secret else str(v)) for k, v in settings.values},
        # the secret files the image's services read, filled at boot (secrets.sh)
        "secrets": {
            s.name: {
                "path": f"{SECRETS_DIR}/{s.name}",
                "encoding": s.encoding.value,
                "generate": s.generate.value,
                "owner": s.owner,
            }
            for s in secret_files
        },
        "probes": [
            {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(p).items()}
            for p in recipe.probes
        ],
        "ports": sorted({*recipe.ports, *(p.port for p in recipe.probes)}),
        "data": DATA,
    }
