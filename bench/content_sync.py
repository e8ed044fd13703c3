"""Content from git: what content-sync adds to the sealed root, and how long a commit takes
to be served against the device's polling interval (issue 12 §4, §6).

    .venv/bin/python bench/content_sync.py [--board qemu-virt-arm64] [--interval 10] [--commits 6]

In one run:
- homepage built as it is (site from git, content-sync in the root) and built again from a
  copy of the recipe whose site is a plain [[tree]] (no content-sync): the sealed roots'
  sizes and their ratio;
- one boot of the first image with site_interval=INTERVAL, pulling from a git http-backend
  on the host; COMMITS commits are pushed at random moments, and each one's latency is the
  time from the push to the first GET / that serves it. The latency is printed against the
  interval (the expected mean is about half the interval plus one pull), and against one
  pull-and-switch of the same commit by content-sync on the host (the work without waiting).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliancekit.board import find_board  # noqa: E402
from appliancekit.build import BuildPlan, build  # noqa: E402
from appliancekit.cache import Cache, default_cache_dir  # noqa: E402
from appliancekit.content.gitserver import GitHttpServer  # noqa: E402
from appliancekit.content.gobuild import go_build  # noqa: E402
from appliancekit.content.harness import GUEST_HOST_ADDRESS, ContentMachine  # noqa: E402
from appliancekit.content.install import PROGRAM_SOURCE  # noqa: E402
from appliancekit.output import Reporter  # noqa: E402
from appliancekit.recipe import load_recipe, resolve_settings  # noqa: E402

MIB = 1 << 20


def git(work: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.org",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.org",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        ["git", "-C", str(work), *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def without_content(recipe_dir: Path, dest: Path) -> Path:
    """A copy of homepage whose site is a [[tree]] again: the baseline without content-sync."""
    shutil.copytree(recipe_dir, dest)
    text = (dest / "recipe.toml").read_text()
    # a table runs to the next line that starts with '['
    text = re.sub(r"\[settings\.site_(repo|branch|interval|signer)\]\n(?:(?!\[).*\n)*", "", text)
    text = re.sub(
        r"\[\[content\]\]\n(?:(?!\[).*\n)*",
        '[[tree]]\npath = "/srv/www"\nsource = "{{ settings.site }}"\n\n',
        text,
    )
    (dest / "recipe.toml").write_text(text)
    assert not load_recipe(dest).content
    return dest


def build_root_bytes(recipe_dir: Path, board_name: str, images: Path) -> tuple[Path, int]:
    recipe = load_recipe(recipe_dir)
    board = find_board(board_name, ROOT / "boards")
    plan = BuildPlan(recipe, board, resolve_settings(recipe, {}), images)
    result = build(plan, Cache(default_cache_dir()), Reporter())
    sizes = json.loads((result.output_dir / "manifest.json").read_text())["sizes"]
    return result.output_dir, int(sizes["sealed_root_bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="qemu-virt-arm64")
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--commits", type=int, default=6)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-content.") as tmp:
        work = Path(tmp)
        image, with_bytes = build_root_bytes(ROOT / "recipes" / "homepage", args.board, work / "a")
        plain = without_content(ROOT / "recipes" / "homepage", work / "plain" / "homepage")
        _, without_bytes = build_root_bytes(plain, args.board, work / "b")
        program = go_build(
            PROGRAM_SOURCE, "content-sync", find_board(args.board, ROOT / "boards").arch
        )

        repos = work / "repos"
        repos.mkdir()
        site = repos / "site-work"
        site.mkdir()
        git(site, "init", "-q", "-b", "main")
        subprocess.run(["git", "init", "-q", "--bare", str(repos / "site.git")], check=True)

        def push(text: str) -> str:
            (site / "index.html").write_text(text)
            git(site, "add", "-A")
            git(site, "commit", "-q", "-m", text)
            git(site, "push", "-q", str(repos / "site.git"), "HEAD:main")
            return git(site, "rev-parse", "HEAD")

        push("<p>bench 0</p>\n")
        manifest_path = image / "manifest.json"
        from appliancekit.manifest import read_manifest

        manifest = read_manifest(image)
        assert manifest is not None and manifest_path.exists()
        board = find_board(args.board, ROOT / "boards")
        latencies = []
        with GitHttpServer(repos) as server:
            # the host pull: one content-sync pass of a fresh commit, no waiting
            host = go_build(PROGRAM_SOURCE, "content-sync", "host")
            conf = work / "host.conf"
            conf.write_text(
                f"name=site\ndir={work / 'host-state'}\nrepo={server.url('site.git')}\n"
                "check=require:index.html\n"
            )
            host_pulls = []
            for _ in range(3):
                push(f"<p>host {time.monotonic()}</p>\n")
                start = time.monotonic()
                subprocess.run([str(host), "once", str(conf)], check=True, capture_output=True)
                host_pulls.append(time.monotonic() - start)
            push("<p>bench 0</p>\n")
            settings = {
                "site_repo": server.url("site.git", host=GUEST_HOST_ADDRESS),
                "site_interval": str(args.interval),
            }
            with ContentMachine(image, manifest, board, settings, work / "vm") as vm:
                vm.wait_for_body("bench 0", 300)
                for n in range(1, args.commits + 1):
                    time.sleep(rng.uniform(0, args.interval))
                    push(f"<p>bench {n}</p>\n")
                    latencies.append(vm.wait_for_body(f"bench {n}", 10 * args.interval + 120))
    mean = statistics.mean(latencies)
    host_pull = min(host_pulls)
    print(f"content-sync ({args.board}): {program.stat().st_size / MIB:.2f} MiB static binary")
    print(
        f"sealed root: {with_bytes / MIB:.2f} MiB with content-sync, {without_bytes / MIB:.2f} MiB"
        f" without (same recipe, site as [[tree]]): +{(with_bytes - without_bytes) / MIB:.2f} MiB,"
        f" ratio {with_bytes / without_bytes:.3f}"
    )
    print(
        f"sync latency, {len(latencies)} commits at random moments, interval {args.interval} s:"
        f" mean {mean:.2f} s, max {max(latencies):.2f} s; mean/interval {mean / args.interval:.3f}"
        f", max/interval {max(latencies) / args.interval:.3f}"
    )
    print(
        f"one pull and switch on the host (content-sync once, best of 3): {host_pull:.3f} s;"
        f" mean latency / host pull {mean / host_pull:.1f}"
    )


if __name__ == "__main__":
    main()
