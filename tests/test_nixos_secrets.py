"""NixOS images fill /data/appliance/secrets at boot: the rendered secrets.sh run for real (as
root, with the services' users resolved through a passwd file of their own), and the rendered
unit cross-checked, as Nix evaluates it, against the files the services are configured to read."""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.devsettings import render_settings_env
from appliancekit.disk import (
    PartitionRole,
    PartitionSpec,
    assemble_disk,
    extract_fat_file,
    make_fat_image,
)
from appliancekit.errors import UserError
from appliancekit.flash import flash_to_file
from appliancekit.nixos import render_flake
from appliancekit.nixos.boards import board_mapping
from appliancekit.nixos.build import DISK, FLAKE_DIR, write_nixos_manifest
from appliancekit.nixos.secrets import load_secret_files
from appliancekit.recipe import (
    find_recipe,
    list_recipes,
    load_recipe,
    resolve_settings,
)
from tests import nixeval

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
BOARDS = ROOT / "boards"
SECRETS_DIR = "/data/appliance/secrets"
SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]  # Debian's sh; NixOS runs bash
# one board per nixpkgs image route (repart, amazon, raspberry-pi, sunxi)
ROUTE_BOARDS = ("qemu-virt-arm64", "ec2-x86_64", "rpi4", "cubieboard")
USERS = {"pixelfed": 4001, "peertube": 4002, "matrix-synapse": 4003, "restic": 4004}
OTHER_UID = 4099  # a service that must not read another's secret


def render(recipe_name: str, board_name: str, out: Path):
    recipe = find_recipe(recipe_name, RECIPES)
    board = find_board(board_name, BOARDS)
    return render_flake(recipe, board, resolve_settings(recipe, {}), out)


@pytest.fixture
def device() -> Iterator[Path]:
    """A data partition's stand-in that non-root users can traverse (pytest's tmp is 0700)."""
    top = Path(tempfile.mkdtemp(prefix="ak-secrets-", dir="/tmp"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top)


@functools.cache
def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0  # a container without CAP_SYS_ADMIN cannot


def run_secrets(
    script: Path, settings: Path, secrets: Path, shell: str
) -> subprocess.CompletedProcess:
    """Run secrets.sh as root with the services' users in /etc/passwd (a private mount)."""
    if not _can_unshare():
        pytest.skip("needs root and a mount namespace (unshare -m) for the services' users")
    etc = secrets.parent / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        + "".join(f"{n}:x:{uid}:{uid}::/:/bin/false\n" for n, uid in USERS.items())
    )
    (etc / "group").write_text(
        "root:x:0:\n" + "".join(f"{n}:x:{uid}:\n" for n, uid in USERS.items())
    )
    inner = (
        f"mount --bind {etc}/passwd /etc/passwd && mount --bind {etc}/group /etc/group && "
        f'exec {shell} "$0" "$1" "$2"'
    )
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            inner,
            str(script),
            str(settings),
            str(secrets),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def can_read(path: Path, uid: int) -> bool:
    proc = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "cat", str(path)],
        capture_output=True,
    )
    return proc.returncode == 0


def owner_mode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, stat.S_IMODE(st.st_mode)


# --------------------------------------------------------------------------- the script


@pytest.mark.parametrize("shell", SHELLS)
def test_settings_env_values_become_the_services_files(
    shell: str, tmp_path: Path, device: Path
) -> None:
    render("peertube", "rpi4", tmp_path / "f")
    script = tmp_path / "f" / "secrets.sh"
    secrets = device / "secrets"
    env_text = "PT_INITIAL_ROOT_PASSWORD=first-root-pw\nAWS_ACCESS_KEY_ID=AK1\n"
    token = "0f" * 32
    settings = device / "settings.env"
    settings.write_text(
        render_settings_env(
            {"secret": token, "env": base64.b64encode(env_text.encode()).decode(), "domain": "x.y"}
        )
    )
    proc = run_secrets(script, settings, secrets, shell)
    assert proc.returncode == 0, proc.stderr
    for secret in (token, "first-root-pw", base64.b64encode(env_text.encode()).decode()):
        assert secret not in proc.stdout + proc.stderr
    # peertube's start script reads its secret itself: its file, its own, nobody else's
    assert (secrets / "secret").read_text() == token
    assert owner_mode(secrets / "secret") == (USERS["peertube"], 0o400)
    assert can_read(secrets / "secret", USERS["peertube"])
    assert not can_read(secrets / "secret", OTHER_UID)
    # the environment file is read by systemd (EnvironmentFile=): root's, decoded
    assert (secrets / "env").read_text() == env_text
    assert owner_mode(secrets / "env") == (0, 0o400)
    assert not can_read(secrets / "env", USERS["peertube"])
    # the directory: reachable, not listable
    assert owner_mode(secrets) == (0, 0o711)
    assert sorted(p.name for p in secrets.iterdir()) == ["env", "secret"]

    # next boot, settings.env without them: the files stay as they are
    settings.write_text(render_settings_env({"domain": "x.y"}))
    assert run_secrets(script, settings, secrets, shell).returncode == 0
    assert (secrets / "secret").read_text() == token

    # a value that is not base64 keeps the old file and says which secret, not its value
    settings.write_text(render_settings_env({"env": "not*base64!", "secret": "ab" * 32}))
    proc = run_secrets(script, settings, secrets, shell)
    assert proc.returncode == 1 and "env: the value in settings.env is not base64" in proc.stderr
    assert "not*base64!" not in proc.stdout + proc.stderr
    assert (secrets / "env").read_text() == env_text
    assert (secrets / "secret").read_text() == "ab" * 32  # a new value replaces the old one
    assert not [p for p in secrets.iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.parametrize("shell", SHELLS)
def test_secrets_the_service_allows_are_generated_once_per_device(
    shell: str, tmp_path: Path, device: Path
) -> None:
    files = {}
    for recipe in ("pixelfed", "dns", "peertube"):
        render(recipe, "qemu-virt-arm64", tmp_path / recipe)
        for n in (1, 2):
            secrets = device / f"{recipe}-device{n}"
            proc = run_secrets(tmp_path / recipe / "secrets.sh", device / "none", secrets, shell)
            assert proc.returncode == 0, proc.stderr
            files[recipe, n] = {p.name: p.read_text() for p in secrets.iterdir()}
    app_env = files["pixelfed", 1]["app_env"]
    m = re.fullmatch(r"APP_KEY=base64:([A-Za-z0-9+/=]+)\n", app_env)
    assert m and len(base64.b64decode(m.group(1))) == 32  # what Laravel's key:generate makes
    assert re.fullmatch(r"API_KEY=[0-9a-f]{64}", files["dns", 1]["api_key"])
    assert re.fullmatch(r"[0-9a-f]{64}", files["peertube", 1]["secret"])
    assert files["peertube", 1]["env"] == ""
    for recipe in ("pixelfed", "dns", "peertube"):
        assert files[recipe, 1] != files[recipe, 2]
    # a generated secret stays: the second boot keeps it
    secrets = device / "dns-device1"
    run_secrets(tmp_path / "dns" / "secrets.sh", device / "none", secrets, shell)
    assert (secrets / "api_key").read_text() == files["dns", 1]["api_key"]


# --------------------------------------------------------------------------- the unit


def _referenced(values: dict) -> set[str]:
    """Files under SECRETS_DIR named anywhere in an evaluated module (LoadCredential entries
    are NAME:PATH)."""
    found = set()
    for text in nixeval.strings(values):
        for m in re.finditer(re.escape(SECRETS_DIR) + r"/([a-z][a-z0-9_]*)", text):
            found.add(m.group(1))
    return found


# every recipe on one board, and one recipe on every image route (the boot partition differs)
CASES = sorted(
    {(r, "rpi4") for r in list_recipes(RECIPES)} | {("pixelfed", b) for b in ROUTE_BOARDS}
)


@pytest.mark.parametrize(("recipe_name", "board_name"), CASES)
def test_every_secret_file_a_service_reads_exists_before_it_starts(
    recipe_name: str, board_name: str, tmp_path: Path, device: Path
) -> None:
    flake = tmp_path / "f"
    render(recipe_name, board_name, flake)
    modules = nixeval.flake_modules(flake)
    referenced = _referenced(modules["recipe.nix"]["config"])
    imported = modules["configuration.nix"]["imports"]
    assert all(i["exists"] for i in imported), imported
    if not referenced:
        assert not (flake / "secrets.nix").exists()
        return
    assert any(i["path"].endswith("/secrets.nix") for i in imported)
    unit = modules["secrets.nix"]["config"]["systemd"]["services"]["appliancekit-secrets"]

    # ordered before every service with default dependencies, after /data is mounted
    assert "sysinit.target" in unit["wantedBy"] and "sysinit.target" in unit["before"]
    assert unit["unitConfig"]["DefaultDependencies"] is False
    assert SECRETS_DIR in unit["unitConfig"]["RequiresMountsFor"]
    assert unit["serviceConfig"]["Type"] == "oneshot"

    # it mounts the FAT partition the image really has (the one flash writes settings.env to)
    device_path = re.search(r"mount -t vfat -o \S+ (\S+) ", unit["script"]).group(1)
    if board_mapping(find_board(board_name, BOARDS)).seal == "verity-store":
        parts = modules["appliance.nix"]["config"]["image"]["repart"]["partitions"]
        esp = [
            p["repartConfig"]
            for p in parts.values()
            if p.get("repartConfig", {}).get("Type") == "esp"
        ]
        assert device_path == f"/dev/disk/by-partlabel/{esp[0]['Label']}"
    else:
        name = modules["board.nix"]["config"]["sdImage"]["firmwarePartitionName"]
        assert device_path == f"/dev/disk/by-label/{name}"
    if shutil.which("systemd-escape"):
        escaped = subprocess.run(
            ["systemd-escape", "--path", "--suffix=device", device_path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert escaped in unit["wants"] and escaped in unit["after"]

    # ... and runs the flake's secrets.sh on the directory the services read from
    run = unit["script"].strip().splitlines()[-1].split()
    assert re.fullmatch(r"/nix/store/[a-z0-9]{32}-secrets\.sh", run[1]), run
    assert run[3] == SECRETS_DIR

    # first boot of a device flashed without any values: every file exists, for its reader
    secrets = device / "secrets"
    proc = run_secrets(flake / "secrets.sh", device / "none", secrets, SHELLS[-1])
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in secrets.iterdir()} == referenced
    recipe = find_recipe(recipe_name, RECIPES)
    secret = {s.name for s in recipe.settings if s.secret}
    specs = load_secret_files(recipe.directory / "nixos", secret)
    for name in referenced:
        uid = USERS.get(specs[name].owner, 0)
        assert owner_mode(secrets / name) == (uid, 0o400), name


def test_secrets_toml_names_only_secret_settings(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    (folder / "nixos").mkdir(parents=True)
    (folder / "recipe.toml").write_text(
        '[appliance]\nname = "r"\nsummary = "x"\nbackend = "nixos"\n'
        '[settings.key]\nkind = "secret"\nper_device = true\n'
        '[settings.plain]\nkind = "string"\ndefault = "a"\n'
        '[nixos]\n"services.powerdns.secretFile" = "{{ secrets.key }}"\n'
    )
    (folder / "nixos" / "secrets.toml").write_text('[key]\ngenerate = "hex32"\n\n[plain]\n')
    recipe = load_recipe(folder)
    with pytest.raises(UserError, match=r"secrets.toml:4: .*'plain' is not a secret setting"):
        render_flake(
            recipe, find_board("rpi4", BOARDS), resolve_settings(recipe, {}), tmp_path / "o"
        )
    (folder / "nixos" / "secrets.toml").write_text('[key]\ngenerate = "hex64"\n')
    with pytest.raises(UserError, match=r"secrets.toml:2: .*'hex64'; expected one of: hex32"):
        render_flake(
            recipe, find_board("rpi4", BOARDS), resolve_settings(recipe, {}), tmp_path / "p"
        )


# --------------------------------------------------------------------------- flash -> boot


@pytest.mark.parametrize(
    ("recipe_name", "board_name", "table", "fat"),
    [
        ("pixelfed", "rpi4", "gpt", ("ESP", "esp")),
        ("peertube", "cubieboard", "mbr", ("FIRMWARE", "boot")),
    ],
)
def test_flash_writes_the_settings_the_image_fills_its_secrets_from(
    recipe_name: str,
    board_name: str,
    table: str,
    fat: tuple[str, str],
    tmp_path: Path,
    device: Path,
) -> None:
    """A NixOS image directory (a disk shaped like nixpkgs' output: a FAT boot partition and
    a data partition), flashed with real `flash`: its manifest names the FAT partition, flash
    writes settings.env there, and secrets.sh fills the secret from what is on the card."""
    out = tmp_path / "image"
    recipe = find_recipe(recipe_name, RECIPES)
    board = find_board(board_name, BOARDS)
    rendered = render_flake(recipe, board, resolve_settings(recipe, {}), out / FLAKE_DIR)
    fat_image = make_fat_image(tmp_path / "fat.img", {}, 8 * 1024 * 1024, fat[0], "t")
    assemble_disk(
        out / DISK,
        table,
        board.arch.value,
        [
            PartitionSpec(fat[0], PartitionRole(fat[1]), 0, fat_image),
            PartitionSpec("data", PartitionRole.DATA, 8 * 1024 * 1024, None),
        ],
        seed="t",
    )
    manifest = write_nixos_manifest(out, rendered, recipe, board, "image.raw")
    boot = manifest.disk.by_role("esp", "boot")
    assert boot is not None and boot.role == fat[1]

    env_text = "APP_KEY=base64:Zmxhc2hlZC1rZXk=\nMAIL_PASSWORD=pw\n"
    name = "app_env" if recipe_name == "pixelfed" else "env"
    target = tmp_path / "card.img"
    flash_to_file(out, target, {name: base64.b64encode(env_text.encode()).decode()})
    settings = device / "settings.env"
    extract_fat_file(target, boot.offset, "settings.env", settings)
    proc = run_secrets(out / FLAKE_DIR / "secrets.sh", settings, device / "secrets", SHELLS[-1])
    assert proc.returncode == 0, proc.stderr
    assert (device / "secrets" / name).read_text() == env_text
