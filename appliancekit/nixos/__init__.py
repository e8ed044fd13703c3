"""The NixOS backend: a recipe x board rendered as a flake pinned to one nixpkgs revision,
built with nixpkgs' own image modules wherever Nix exists.

Entry points for `appliancekit build --backend nixos`:
    render_flake(recipe, board, settings, out_dir) -> NixRender     (pure rendering + checks)
    build_nixos(recipe, board, settings, images_dir, reporter) -> NixBuildResult
        renders images/RECIPE-BOARD/flake and runs `nix build`; raises NeedsNixError (exit 3)
        with the flake path when Nix is not available.
"""

from appliancekit.nixos.build import NixBuildResult, build_nixos, nix_unavailable_reason
from appliancekit.nixos.pin import NIXPKGS
from appliancekit.nixos.render import NixRender, check_recipe_options, render_flake

__all__ = [
    "NIXPKGS",
    "NixBuildResult",
    "NixRender",
    "build_nixos",
    "check_recipe_options",
    "nix_unavailable_reason",
    "render_flake",
]
