"""The NixOS backend: flakes rendered for every recipe x board, checked without nixpkgs."""

from __future__ import annotations

import importlib.util
import json
import os
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
from appliancekit.nixos.nixexpr import Raw, expr, format_option, parse_option, string
from appliancekit.nixos.options import OptionSet, bundled_options
from appliancekit.nixos.render import check_recipe_options
from appliancekit.output import Reporter
from appliancekit.recipe import find_recipe, list_recipes, load_recipe, resolve_settings

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
def test_every_recipe_renders_and_parses_on_every_board(
    recipe_name: str, board_name: str, tmp_path: Path
) -> None:
    result = render(recipe_name, board_name, tmp_path / "flake")
    for name in ("flake.nix", "flake.lock", "configuration.nix", "appliance.nix", "board.nix"):
        assert name in result.files
    nix_files = [tmp_path / "flake" / f for f in result.files if f.endswith(".nix")]
    parse_nix(nix_files)
    options = bundled_options()
    for option in result.options:
        assert options.problem(parse_option(option)) is None, option
    lock = json.loads((tmp_path / "flake" / "flake.lock").read_text())
    locked = lock["nodes"]["nixpkgs"]["locked"]
    assert locked["rev"] == NIXPKGS.rev and locked["narHash"] == NIXPKGS.nar_hash
    assert f'"github:NixOS/nixpkgs/{NIXPKGS.rev}"' in (tmp_path / "flake/flake.nix").read_text()


def test_every_recipe_has_both_backends_or_is_nixos_first() -> None:
    for name in list_recipes(RECIPES):
        recipe = find_recipe(name, RECIPES)
        assert recipe.nixos, f"{name} has no [nixos] section"
        if recipe.backend == "debian":
            assert recipe.debian.packages, name


def test_nixos_first_recipes_default_to_the_nixos_backend() -> None:
    for name in ("pixelfed", "mastodon", "peertube", "garage"):
        assert find_recipe(name, RECIPES).backend == "nixos"


def test_board_mapping_uses_nixpkgs_image_modules(tmp_path: Path) -> None:
    expected = {
        "rpi4": ("installer/sd-card/sd-image-aarch64.nix", "finalImage", "verity-store"),
        "cubieboard": (
            "installer/sd-card/sd-image-armv7l-multiplatform.nix",
            "sdImage",
            "read-only-store",
        ),
        "ec2-x86_64": ("virtualisation/amazon-image.nix", "finalImage", "verity-store"),
        "ec2-arm64": ("virtualisation/amazon-image.nix", "finalImage", "verity-store"),
        "qemu-virt-arm64": ("image/repart.nix", "finalImage", "verity-store"),
    }
    for name, (module, attr, seal) in expected.items():
        result = render("garage", name, tmp_path / name)
        assert result.board_modules[0] == module
        assert result.image_attr == attr and result.seal == seal
        text = (tmp_path / name / "board.nix").read_text()
        assert f'"${{modulesPath}}/{module}"' in text
    cubie = (tmp_path / "cubieboard" / "board.nix").read_text()
    assert 'defconfig = "Cubieboard_defconfig"' in cubie
    assert "u-boot-sunxi-with-spl.bin of=$img bs=1024 seek=8" in cubie
    assert (
        'nixpkgs.buildPlatform = "x86_64-linux"'
        in (tmp_path / "cubieboard" / "configuration.nix").read_text()
    )


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


def test_secrets_stay_out_of_the_store(tmp_path: Path) -> None:
    render("pixelfed", "rpi4", tmp_path / "f")
    text = (tmp_path / "f/recipe.nix").read_text()
    assert 'services.pixelfed.secretFile = "/data/appliance/secrets/app_env";' in text
    info = json.loads((tmp_path / "f/appliance.json").read_text())
    assert info["secrets"] == {"app_env": "/data/appliance/secrets/app_env"}
    assert info["probes"][0]["port"] == 80 and info["seal"] == "verity-store"


def test_settings_are_substituted(tmp_path: Path) -> None:
    render("mastodon", "ec2-arm64", tmp_path / "f", domain="social.example.net")
    text = (tmp_path / "f/recipe.nix").read_text()
    assert 'services.mastodon.localDomain = "social.example.net";' in text
    assert 'services.nginx.virtualHosts."social.example.net".forceSSL = false;' in text


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


def test_nix_strings_are_escaped() -> None:
    assert string('a "b" ${c} \\ d\n') == '"a \\"b\\" \\${c} \\\\ d\\n"'
    assert expr({"b": [1, True, None], "a.b": Raw("pkgs.x")}) == (
        '{\n  "a.b" = pkgs.x;\n  b = [ 1 true null ];\n}'
    )


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
    result = render_flake(recipe, board(board_name), resolve_settings(recipe, {}), tmp_path / "f")
    parts = []
    for name in (
        "flake.nix",
        "flake.lock",
        "configuration.nix",
        "appliance.nix",
        "board.nix",
        "recipe.nix",
    ):
        parts.append(f"===== {name}\n{(tmp_path / 'f' / name).read_text()}")
    text = "".join(parts)
    golden = GOLDEN / f"nixos-{recipe_name}-{board_name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"rendering changed; UPDATE_GOLDEN=1 rewrites {golden}"
    # what the golden files must show
    assert 'fileSystems."/var/lib" = {' in text and 'device = "/data/var/lib";' in text
    assert "image.repart.verityStore.enable = true;" in text
    assert 'Format = "erofs"' not in text  # erofs is the verity-store module's own default
    assert "services.openssh.enable = lib.mkForce false;" in text
    assert "users.mutableUsers = false;" in text and "nix.enable = false;" in text
    assert 'users.users.root.hashedPassword = "!";' in text
    assert "environment.defaultPackages = [ ];" in text
    module = result.board_modules[0]
    assert f'"${{modulesPath}}/{module}"' in text


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
    assert str(flake) in message and "needs Nix" in message and "\n" not in message
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
    assert not list((images / ".tmp").iterdir())
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
