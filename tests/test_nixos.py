"""The NixOS backend: flakes rendered for every recipe x board, checked without nixpkgs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliancekit.board import (
    Board,
    find_board,
)
from appliancekit.errors import NeedsNixError, UserError
from appliancekit.nixos import NIXPKGS, build_nixos, render_flake
from appliancekit.nixos.boards import board_mapping
from appliancekit.nixos.nixexpr import expr, format_option, parse_option
from appliancekit.nixos.nixversion import MINIMUM, NixVersion, installed_nix, version_problem
from appliancekit.nixos.options import OptionSet, bundled_options
from appliancekit.nixos.render import check_recipe_options
from appliancekit.output import Reporter
from appliancekit.recipe import find_recipe, list_recipes, load_recipe, resolve_settings
from tests import nixeval

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
BOARDS = ROOT / "boards"
GOLDEN = Path(__file__).resolve().parent / "golden"
NIX_INSTANTIATE = shutil.which("nix-instantiate")

BOARD_NAMES = sorted(p.stem for p in BOARDS.glob("*.toml"))


def board(name: str) -> Board:
    return find_board(name, BOARDS)


def render(recipe_name: str, board_name: str, out: Path, **overrides: str):
    recipe = find_recipe(recipe_name, RECIPES)
    return render_flake(recipe, board(board_name), resolve_settings(recipe, overrides), out)


def parse_nix(paths: list[Path]) -> None:
    if NIX_INSTANTIATE is None:
        pytest.skip("nix-instantiate not installed (Debian: nix-bin; scripts/setup-host.sh)")
    for path in paths:
        proc = subprocess.run(
            [NIX_INSTANTIATE, "--parse", str(path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{path}: {proc.stderr}"


# --------------------------------------------------------------------------- every recipe x board


@pytest.mark.parametrize("board_name", BOARD_NAMES)
@pytest.mark.parametrize("recipe_name", list_recipes(RECIPES))
def test_every_recipe_renders_and_evaluates_on_every_board(
    recipe_name: str, board_name: str, tmp_path: Path
) -> None:
    """Nix itself reads every rendered file: each module evaluates (an unbound name, a
    duplicate attribute or a bad escape fails here), every file a module or the flake imports
    exists and is a module, the flake's image output leads to the image attribute of the
    board's nixpkgs image module, and the lock locks the input flake.nix names."""
    flake = tmp_path / "flake"
    board_ = board(board_name)
    render(recipe_name, board_name, flake)
    modules = nixeval.flake_modules(flake)
    for name, module in modules.items():
        for imported in module["imports"]:
            if "path" in imported:
                assert imported["exists"] and imported["function"], (name, imported)
    outputs = nixeval.flake_outputs(flake)
    mapping = board_mapping(board_)
    (config_name,) = outputs["configurations"]
    assert [Path(m["path"]).name for m in outputs["configurations"][config_name]] == [
        "configuration.nix"
    ]
    assert all(m["exists"] for m in outputs["configurations"][config_name])
    assert outputs["packages"] == {
        mapping.build_system: {"image": mapping.image_attr, "default": mapping.image_attr}
    }
    # nixpkgs.hostPlatform is the board's architecture; a cross build names the build system
    platform = modules["configuration.nix"]["config"]["nixpkgs"]
    assert (
        platform["hostPlatform"].split("-")[0]
        == {"arm64": "aarch64", "amd64": "x86_64", "armhf": "armv7l"}[board_.arch.value]
    )
    assert platform.get("buildPlatform", platform["hostPlatform"]) == mapping.build_system
    # the lock must lock exactly the input flake.nix asks for, or Nix re-locks (online)
    lock = outputs["lock"]
    node = lock["nodes"][lock["nodes"][lock["root"]]["inputs"]["nixpkgs"]]
    original = node["original"]
    url = f"{original['type']}:{original['owner']}/{original['repo']}/{original['rev']}"
    assert outputs["inputs"]["nixpkgs"]["url"] == url
    assert node["locked"]["rev"] == original["rev"]
    assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", node["locked"]["narHash"])
    # what the README promises of every image, as the evaluated configuration says it
    sealed = modules["appliance.nix"]["config"]
    assert sealed["services"]["openssh"]["enable"] is False
    assert sealed["nix"]["enable"] is False and sealed["users"]["mutableUsers"] is False
    assert sealed["users"]["users"]["root"]["hashedPassword"] == "!"
    assert sealed["fileSystems"]["/"]["fsType"] == "tmpfs"
    assert "ro" in sealed["fileSystems"]["/nix/store"]["options"]
    assert sealed["fileSystems"]["/var/lib"]["device"] == "/data/var/lib"
    recipe = find_recipe(recipe_name, RECIPES)
    ports = {*recipe.ports, *(p.port for p in recipe.probes)}
    assert set(sealed["networking"]["firewall"]["allowedTCPPorts"]) == ports


def test_every_recipe_has_both_backends_or_is_nixos_first() -> None:
    for name in list_recipes(RECIPES):
        recipe = find_recipe(name, RECIPES)
        assert recipe.nixos, f"{name} has no [nixos] section"
        if recipe.backend == "debian":
            assert recipe.debian.packages, name


def test_nixos_first_recipes_default_to_the_nixos_backend() -> None:
    for name in ("pixelfed", "mastodon", "peertube", "garage"):
        assert find_recipe(name, RECIPES).backend == "nixos"


def test_path_settings_are_copied_into_the_flake(tmp_path: Path) -> None:
    result = render("homepage", "qemu-virt-arm64", tmp_path / "f")
    assert "files/site/index.html" in result.files
    assert (
        "services.nginx.virtualHosts.homepage.root = ./files/site;"
        in (tmp_path / "f/recipe.nix").read_text()
    )


def test_recipe_modules_are_shipped_with_the_flake(tmp_path: Path) -> None:
    result = render("peertube", "ec2-x86_64", tmp_path / "f")
    assert "recipe/peertube-7.3.0.nix" in result.files
    assert "./recipe/peertube-7.3.0.nix" in (tmp_path / "f/recipe.nix").read_text()
    pin = (tmp_path / "f/recipe/peertube-7.3.0.nix").read_text()
    assert 'version = "7.3.0"' in pin and "sha256-" in pin


def test_secret_values_never_reach_the_flake(tmp_path: Path) -> None:
    recipe = find_recipe("pixelfed", RECIPES)
    value = "APP_KEY=base64:c2VjcmV0LXZhbHVlLW5ldmVyLWluLXRoZS1zdG9yZQ=="
    settings = resolve_settings(recipe, {"app_env": value})
    render_flake(recipe, board("rpi4"), settings, tmp_path / "f")
    for path in (tmp_path / "f").rglob("*"):
        if path.is_file():
            assert value not in path.read_text(errors="replace"), path


def test_settings_are_substituted(tmp_path: Path) -> None:
    render("mastodon", "ec2-arm64", tmp_path / "f", domain="social.example.net")
    config = nixeval.module(tmp_path / "f", "recipe.nix")
    assert config["services"]["mastodon"]["localDomain"] == "social.example.net"
    # a dotted name inside an option path stays one attribute name, as Nix reads it
    vhost = config["services"]["nginx"]["virtualHosts"]["social.example.net"]
    assert vhost["forceSSL"] is False and vhost["default"] is True


# --------------------------------------------------------------------------- option checks


def _recipe(tmp_path: Path, nixos: str, extra: str = "") -> Path:
    folder = tmp_path / "typo"
    folder.mkdir()
    (folder / "recipe.toml").write_text(
        '[appliance]\nname = "typo"\nsummary = "x"\nbackend = "nixos"\n'
        + extra
        + "\n[nixos]\n"
        + nixos
    )
    return folder


def test_misspelled_option_names_file_line_and_suggestion(tmp_path: Path) -> None:
    folder = _recipe(
        tmp_path, '"services.nginx.enable" = true\n"services.pixelfed.enabel" = true\n'
    )
    recipe = load_recipe(folder)
    with pytest.raises(UserError) as info:
        render_flake(recipe, board("rpi4"), resolve_settings(recipe, {}), tmp_path / "out")
    message = str(info.value)
    assert f"{folder / 'recipe.toml'}:8:" in message
    assert "services.pixelfed.enabel" in message
    assert "did you mean 'services.pixelfed.enable'" in message
    assert "\n" not in message


def test_misspelled_option_in_a_nested_table(tmp_path: Path) -> None:
    folder = _recipe(tmp_path, '[nixos.services.garage]\nenable = true\nlogLvel = "info"\n')
    with pytest.raises(UserError, match=r"recipe.toml:9: .*services.garage.logLvel.*logLevel"):
        check_recipe_options(load_recipe(folder))


def test_unknown_namespace_and_groups_are_reported(tmp_path: Path) -> None:
    folder = _recipe(tmp_path, '"servics.nginx.enable" = true\n')
    with pytest.raises(UserError, match="did you mean 'services.nginx.enable'"):
        check_recipe_options(load_recipe(folder))
    options = bundled_options()
    assert "group of options" in (options.problem(("services", "nginx")) or "")


def test_open_options_and_attribute_names() -> None:
    options = bundled_options()
    ok = [
        "services.pixelfed.settings.ANY_ENV_KEY",
        "services.garage.settings.s3_api.api_bind_addr",
        'services.nginx.virtualHosts."a.example".locations."/".proxyPass',
        'fileSystems."/data"',
        "users.users.root.hashedPassword",
    ]
    for name in ok:
        assert options.problem(parse_option(name)) is None, name
    assert options.problem(parse_option('services.nginx.virtualHosts."a".rooot')) is not None


def test_option_list_is_for_the_pinned_revision() -> None:
    options = bundled_options()
    assert options.meta["nixpkgs-rev"] == NIXPKGS.rev
    assert options.count > 300


def test_secret_settings_cannot_be_baked_in(tmp_path: Path) -> None:
    extra = '[settings.key]\nkind = "secret"\nper_device = true\n'
    folder = _recipe(tmp_path, '"services.pixelfed.domain" = "{{ settings.key }}"\n', extra)
    recipe = load_recipe(folder)
    with pytest.raises(UserError, match="never baked into the image"):
        render_flake(recipe, board("rpi4"), resolve_settings(recipe, {}), tmp_path / "o")


# --------------------------------------------------------------------------- nix expressions


HOSTILE = [
    'a "b" ${c} \\ d',
    "line1\nline2\r\ttab",
    "$${x} $$ ${ '' ''${ ''\\",
    "dollar at end $",
    "unicode ä ✓",
]


def test_nix_values_read_back_as_written(tmp_path: Path) -> None:
    """What expr() writes, Nix reads back as the same value (strings that look like Nix
    interpolation or escapes included; attribute names with dots and quotes)."""
    value = {
        "strings": HOSTILE,
        "names": {name: i for i, name in enumerate(["a.b", 'q"uote', "if", "x-y", "${z}"])},
        "scalars": [1, -2, 1.5, True, False, None],
        "nested": {"a": {"b": [{"c": "d"}]}},
    }
    (tmp_path / "value.nix").write_text(expr(value) + "\n")
    assert nixeval.evaluate("import ./value.nix", tmp_path) == value


def test_option_paths_round_trip() -> None:
    path = ("services", "nginx", "virtualHosts", "a.example", "root")
    assert parse_option(format_option(path)) == path
    with pytest.raises(ValueError):
        parse_option("a..b")


# --------------------------------------------------------------------------- golden files


@pytest.mark.parametrize(
    ("recipe_name", "board_name"), [("pixelfed", "rpi4"), ("mastodon", "ec2-arm64")]
)
def test_golden(recipe_name: str, board_name: str, tmp_path: Path) -> None:
    recipe = find_recipe(recipe_name, RECIPES)
    render_flake(recipe, board(board_name), resolve_settings(recipe, {}), tmp_path / "f")
    parts = []
    for name in (
        "flake.nix",
        "flake.lock",
        "configuration.nix",
        "appliance.nix",
        "board.nix",
        "recipe.nix",
        "secrets.nix",
        "secrets.sh",
    ):
        parts.append(f"===== {name}\n{(tmp_path / 'f' / name).read_text()}")
    text = "".join(parts)
    golden = GOLDEN / f"nixos-{recipe_name}-{board_name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"rendering changed; UPDATE_GOLDEN=1 rewrites {golden}"


# --------------------------------------------------------------------------- building


def test_build_without_nix_leaves_a_complete_flake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    recipe = find_recipe("pixelfed", RECIPES)
    images = tmp_path / "images"
    with pytest.raises(NeedsNixError) as info:
        build_nixos(recipe, board("rpi4"), resolve_settings(recipe, {}), images, Reporter())
    flake = images / "pixelfed-rpi4" / "flake"
    message = str(info.value)
    assert str(flake) in message and "nix is not on PATH" in message and "\n" not in message
    assert "Debian 13's nix-bin" in message  # what to install
    assert info.value.exit_code == 3
    for name in (
        "flake.nix",
        "flake.lock",
        "configuration.nix",
        "appliance.nix",
        "board.nix",
        "recipe.nix",
        "appliance.json",
    ):
        assert (flake / name).is_file(), name
    assert not (images / ".tmp").exists()
    monkeypatch.undo()
    parse_nix(sorted(flake.glob("*.nix")))


# --------------------------------------------------------------------------- the refresh script


def _refresh_script():
    spec = importlib.util.spec_from_file_location(
        "refresh_nixos_options", ROOT / "scripts" / "refresh-nixos-options.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


MODULE = """\
{ config, lib, pkgs, ... }:
with lib;
let
  cfg = config.services.demo;
  partOptions = { options.size = mkOption { type = types.int; }; };
in
{
  options.services.demo = {
    enable = mkEnableOption "demo";
    package = lib.mkPackageOption pkgs "demo" { };
    "dotted.name" = mkOption { type = types.str; default = "a;b ${cfg.x}"; };
    settings = mkOption {
      type = types.submodule {
        freeformType = (pkgs.formats.toml { }).type;
        options.data_dir = mkOption { type = types.path; };
      };
    };
    hosts = mkOption {
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = { root = mkOption { type = types.str; description = ''x ${name}''; }; };
      }));
    };
    parts = mkOption { type = types.attrsOf (types.submodule partOptions); };
    redis.createLocally = mkEnableOption "redis" // { default = true; };
  };
  config = mkIf cfg.enable { services.other.enable = mkOption { }; };
}
"""


def test_refresh_script_extracts_declarations(tmp_path: Path) -> None:
    script = _refresh_script()
    found = script.extract({"nixos/modules/demo.nix": MODULE})
    text = script.render(found, {"nixpkgs-rev": "test"})
    assert text.splitlines() == [
        "# nixpkgs-rev: test",
        'services.demo."dotted.name"',
        "services.demo.enable",
        "services.demo.hosts",
        "services.demo.hosts.<name>.root",
        "services.demo.package",
        "services.demo.parts\to",
        "services.demo.redis.createLocally",
        "services.demo.settings\to",
        "services.demo.settings.data_dir",
    ]
    parsed = OptionSet.parse(text.splitlines())
    assert parsed.problem(("services", "demo", "hosts", "x", "root")) is None
    assert parsed.problem(("services", "other", "enable")) is not None


def test_refresh_script_writes_and_checks_lists(tmp_path: Path) -> None:
    tree = tmp_path / "nixpkgs" / "nixos" / "modules"
    tree.mkdir(parents=True)
    (tree / "demo.nix").write_text(MODULE)
    script = _refresh_script()
    out = tmp_path / "opts.txt.gz"
    assert (
        script.main(["--nixpkgs", str(tmp_path / "nixpkgs"), "--rev", "r1", "--out", str(out)]) == 0
    )
    names = script.read_list(out)
    assert "services.demo.enable" in names
    committed = tmp_path / "committed.txt"
    committed.write_text("services.demo.enable\nservices.demo.hosts.<name>.root\n")
    args = ["--nixpkgs", str(tmp_path / "nixpkgs"), "--check", str(committed)]
    assert script.main(args) == 0
    committed.write_text("services.demo.enabel\n")
    assert script.main(args) == 1


def test_build_without_nix_keeps_an_existing_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    images = tmp_path / "images"
    existing = images / "garage-qemu-virt-arm64"
    existing.mkdir(parents=True)
    (existing / "disk.img").write_bytes(b"debian image")
    recipe = find_recipe("garage", RECIPES)
    with pytest.raises(NeedsNixError):
        build_nixos(
            recipe, board("qemu-virt-arm64"), resolve_settings(recipe, {}), images, Reporter()
        )
    assert (existing / "disk.img").read_bytes() == b"debian image"
    assert (existing / "flake" / "flake.nix").is_file()


def test_board_without_nixos_table_is_refused(tmp_path: Path) -> None:
    text = (BOARDS / "qemu-virt-arm64.toml").read_text()
    plain = tmp_path / "plain-virt.toml"
    plain.write_text(
        text.split("\n[nixos]")[0].replace('name = "qemu-virt-arm64"', 'name = "plain-virt"')
    )
    recipe = find_recipe("garage", RECIPES)
    with pytest.raises(UserError, match=r"no \[nixos\] table") as exc:
        render_flake(
            recipe, find_board("plain-virt", tmp_path), resolve_settings(recipe, {}), tmp_path / "o"
        )
    assert exc.value.file == str(plain)


def test_nixos_image_must_exist_for_the_architecture(tmp_path: Path) -> None:
    text = (BOARDS / "cubieboard.toml").read_text().replace('image = "sunxi"', 'image = "amazon"')
    (tmp_path / "cubieboard.toml").write_text(text)
    recipe = find_recipe("garage", RECIPES)
    with pytest.raises(UserError, match="exists for arm64, amd64, not armhf"):
        render_flake(
            recipe, find_board("cubieboard", tmp_path), resolve_settings(recipe, {}), tmp_path / "o"
        )


def test_nix_versions_that_cannot_build_the_pin_are_named() -> None:
    def problem(output: str) -> str | None:
        return version_problem(NixVersion.parse(output))

    too_old = problem("nix (Nix) 2.8.0")  # Debian 12's nix-bin
    assert too_old and "2.8.0 is too old" in too_old and ">= 2.18" in too_old
    assert "Debian 13's nix-bin" in too_old and "2.34.7" in too_old
    assert problem("nix (Nix) 2.17.1") is not None
    assert problem("nix (Nix) 2.18.0") is None
    assert problem("nix (Nix) 2.26.3") is None  # Debian 13
    assert "different narHash" in (problem("nix (Nix) 2.31.1") or "")
    assert problem("nix (Nix) 2.34.7") is None
    assert problem("no version here") is not None


def test_build_with_debians_nix_exits_3_naming_the_flake_and_the_version(tmp_path: Path) -> None:
    """The Nix that setup-host.sh installs on Debian 12 (2.8) cannot evaluate nixpkgs: build
    says so in one line instead of starting an evaluation that fails."""
    found = installed_nix()
    if found is None or found[1] is None or found[1].parts[:2] >= MINIMUM:
        pytest.skip("needs a Nix older than nixpkgs' minimum on PATH (Debian 12's nix-bin)")
    images = tmp_path / "images"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliancekit",
            "build",
            "garage",
            "--board",
            "qemu-virt-arm64",
            "--images",
            str(images),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str(images / "garage-qemu-virt-arm64" / "flake") in lines[0]
    assert f"nix {found[1].text} is too old" in lines[0] and "Debian 13's nix-bin" in lines[0]


def test_doctor_names_the_installed_nix_and_whether_it_builds() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "appliancekit", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    report = json.loads(proc.stdout)
    nix = report["nix"]
    found = installed_nix()
    if found is None:
        assert nix["found"] is False and "not on PATH" in nix["problem"]
    else:
        assert nix["version"] == (found[1].text if found[1] else None)
        assert nix["ok"] is (version_problem(found[1]) is None)
        if not nix["ok"]:
            assert "Debian 13's nix-bin" in nix["problem"] and "\n" not in nix["problem"]
    # informational: only the NixOS backend needs Nix, so it does not fail doctor
    assert proc.returncode == (0 if report["ok"] else 1)
