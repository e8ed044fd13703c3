"""Evaluate rendered NixOS modules with the host's nix-instantiate, without nixpkgs.

Debian 12's nix-instantiate (nix-bin 2.8) cannot build what we render (nixpkgs needs Nix >= 2.18,
see appliancekit/nixos/nixversion.py), but it parses and evaluates Nix. A rendered module is a
function of { config, lib, pkgs, modulesPath }; called with the small stand-ins below it gives
the attribute set the module defines, as Nix reads it: quoting, escapes, `''` strings, paths
relative to the flake and attribute merging are Nix's own, not the renderer's idea of them.
`--readonly-mode` computes store paths (`${./secrets.sh}`) without writing to /nix/store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NIX_INSTANTIATE = shutil.which("nix-instantiate")

# only what rendered modules use; a module reaching for anything else fails the evaluation
_ARGS = """
  lib = { mkForce = x: x; mkDefault = x: x; };
  pkgs = {
    runtimeShell = "/run/current-system/sw/bin/sh";
    coreutils = "pkgs.coreutils";
    util-linux = "pkgs.util-linux";
    garage = "pkgs.garage";
    peertube = "pkgs.peertube";
    nmap = "pkgs.nmap";
    runCommand = name: env: script: "pkgs.runCommand:${name}";
    buildUBoot = args: "pkgs.buildUBoot:${args.defconfig}";
  };
  config = {
    system.image.id = "image-id";
    sdImage.populateFirmwareCommands = "populate-firmware";
  };
  args = { inherit lib pkgs config; modulesPath = "/modules"; };
"""


def need_nix() -> str:
    if NIX_INSTANTIATE is None:
        pytest.skip("nix-instantiate not installed (Debian: nix-bin; scripts/setup-host.sh)")
    return NIX_INSTANTIATE


def evaluate(expression: str, directory: Path) -> object:
    """The JSON value of `expression` (which may use `args` and `load FILE`) in `directory`."""
    nix = need_nix()
    text = (
        "let\n"
        + _ARGS
        + "  load = f: import f args;\n"
        + "  imported = f: map (p: if builtins.isPath p then { path = toString p; "
        "exists = builtins.pathExists p; "
        "function = builtins.pathExists p && builtins.isFunction (import p); } "
        "else { module = p; }) ((load f).imports or [ ]);\n" + f"in\n{expression}\n"
    )
    (directory / ".eval.nix").write_text(text)
    try:
        proc = subprocess.run(
            [nix, "--readonly-mode", "--eval", "--strict", "--json", str(directory / ".eval.nix")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        (directory / ".eval.nix").unlink()
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


MODULES = ("configuration.nix", "appliance.nix", "board.nix", "recipe.nix", "secrets.nix")


def flake_modules(directory: Path) -> dict[str, dict]:
    """Every rendered module of the flake in one evaluation: {file: {"config": the attribute
    set it defines, "imports": its imports (paths with whether they exist, or module strings)}}."""
    entries = " ".join(
        f'{{ name = "{m}"; value = {{ config = removeAttrs (load ./{m}) [ "imports" ]; '
        f"imports = imported ./{m}; }}; }}"
        for m in MODULES
        if (directory / m).is_file()
    )
    value = evaluate(f"builtins.listToAttrs [ {entries} ]", directory)
    assert isinstance(value, dict)
    return value


# what nixpkgs.lib.nixosSystem gives the flake: the image attributes nixpkgs' image modules
# define (system.build.finalImage: image/repart.nix; sdImage: installer/sd-card/sd-image.nix)
_NIXPKGS = """{
    lib.nixosSystem = spec: {
      inherit (spec) modules;
      config.system.build = { finalImage = "finalImage"; sdImage = "sdImage"; };
    };
  }"""


def flake_outputs(directory: Path) -> dict:
    """flake.nix as Nix reads it, its outputs computed with a stand-in nixpkgs, and flake.lock:
    {"inputs", "packages": {system: {name: image attribute}}, "configurations": {name:
    [imported module files]}, "lock"}."""
    expression = f"""
  let
    flake = import ./flake.nix;
    out = flake.outputs {{ self = out; nixpkgs = {_NIXPKGS}; }};
  in {{
    inputs = flake.inputs;
    packages = out.packages;
    configurations = builtins.mapAttrs
      (name: c: map (p: {{ path = toString p; exists = builtins.pathExists p; }}) c.modules)
      out.nixosConfigurations;
    lock = builtins.fromJSON (builtins.readFile ./flake.lock);
  }}"""
    value = evaluate(expression, directory)
    assert isinstance(value, dict)
    return value


def module(directory: Path, name: str) -> dict:
    """The attribute set `name` (e.g. "recipe.nix") defines, without its imports."""
    value = evaluate(f'removeAttrs (load ./{name}) [ "imports" ]', directory)
    assert isinstance(value, dict)
    return value


def imports(directory: Path, name: str) -> list[dict]:
    value = evaluate(f"imported ./{name}", directory)
    assert isinstance(value, list)
    return value


def strings(value: object) -> list[str]:
    """Every string anywhere in an evaluated value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []
