# Pin PeerTube to upstream 7.3.0 instead of whatever the pinned nixpkgs ships: an overlay that
# swaps the source and the four yarn offline caches of nixpkgs' own peertube derivation. The
# hashes are those of nixpkgs' pkgs/servers/peertube/default.nix at version 7.3.0. To move to a
# newer release, change `version`, set every hash to lib.fakeHash and copy the hashes Nix reports.
{ lib, ... }:
let
  version = "7.3.0";
in
{
  nixpkgs.overlays = [
    (final: prev: {
      peertube = prev.peertube.overrideAttrs (
        old:
        let
          src = final.fetchFromGitHub {
            owner = "Chocobozzz";
            repo = "PeerTube";
            tag = "v${version}";
            hash = "sha256-WbZFOOvX6WzKB9tszxJl6z+V6cDBH6Y2SjoxF17WvUo=";
          };
          yarnDeps =
            lockfile: hash:
            final.fetchYarnDeps {
              yarnLock = "${src}/${lockfile}";
              inherit hash;
            };
        in
        {
          inherit version src;
          yarnOfflineCacheServer = yarnDeps "yarn.lock" "sha256-T1stKz8+1ghQBJB8kujwcqmygMdoswjFBL/QWAHSis0=";
          yarnOfflineCacheClient = yarnDeps "client/yarn.lock" "sha256-jeE6Xpi/A1Ldbbp12rkG19auud61AZna/vbVE2mpp/8=";
          yarnOfflineCacheAppsCli = yarnDeps "apps/peertube-cli/yarn.lock" "sha256-lcWtZGE/6XGm8KXmzSowCHAb/vGwBoqkwk32Ru3mMYU=";
          yarnOfflineCacheAppsRunner = yarnDeps "apps/peertube-runner/yarn.lock" "sha256-OX9em03iqaRCqFuo2QO/r+CBdk7hHk3WY1EBXlFr1cY=";
          meta = old.meta // {
            description = "${old.meta.description} (pinned to ${version} by appliancekit)";
          };
        }
      );
    })
  ];
}
