"""Content from git (issue 12 §4): content-sync built for this machine and run against a
real `git http-backend` on loopback, its validators, the [[content]] recipe section and the
setting kinds it needs. The QEMU test is tests/test_content_boot.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from appliancekit.content.gitserver import GitHttpServer
from appliancekit.content.gobuild import go_build
from appliancekit.content.install import PROGRAM_SOURCE, config_text
from appliancekit.errors import UserError
from appliancekit.recipe import load_recipe
from appliancekit.settings_kinds import SettingKind, convert

from .conftest import PROJECT
from .test_cli_errors import assert_clean_failure, build_in, scratch_project  # noqa: F401

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs golang-go")


@pytest.fixture(scope="session")
def program() -> Path:
    return go_build(PROGRAM_SOURCE, "content-sync", "host")


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    import os

    full = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        **(env or {}),
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=full
    ).stdout.strip()


class Repo:
    """A work tree whose commits are pushed to ROOT/NAME.git, served by `server`."""

    def __init__(self, root: Path, name: str = "site") -> None:
        self.work = root / f"{name}-work"
        self.bare = root / f"{name}.git"
        self.work.mkdir()
        git(self.work, "init", "-q", "-b", "main")
        subprocess.run(["git", "init", "-q", "--bare", str(self.bare)], check=True)

    def commit(self, files: dict[str, str | None], message: str, *config: str) -> str:
        """Commit and push; `config` (git -c options) given means signed (-S)."""
        for path, text in files.items():
            target = self.work / path
            if text is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, *config, "commit", "-q", "-m", message, *(("-S",) if config else ()))
        git(self.work, "push", "-q", str(self.bare), "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")


def ssh_key(tmp: Path, name: str) -> Path:
    key = tmp / name
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"{name}@example.org",
            "-f",
            str(key),
        ],
        check=True,
    )
    return key


def signing_args(key: Path) -> tuple[str, ...]:
    return ("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}")


@pytest.fixture()
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    with GitHttpServer(tmp_path) as server:
        yield server


def configure(tmp_path: Path, url: str, **extra: str) -> Path:
    seed = tmp_path / "seed"
    seed.mkdir(exist_ok=True)
    (seed / "index.html").write_text("seed\n")
    lines = {
        "name": "site",
        "dir": str(tmp_path / "state"),
        "seed": str(seed),
        "repo": url,
        "branch": "main",
        "interval": "5",
        "check": "require:index.html",
        **extra,
    }
    conf = tmp_path / "site.conf"
    conf.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    return conf


def once(program: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(program), "once", str(conf)], capture_output=True, text=True)


def status(tmp_path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (tmp_path / "state" / "status").read_text().splitlines():
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def served_text(tmp_path: Path, name: str = "index.html") -> str:
    return (tmp_path / "state" / "current" / name).read_text()


def test_sync_applies_switches_and_keeps_serving_through_bad_commits(
    program: Path, served: GitHttpServer, tmp_path: Path
) -> None:
    repo = Repo(tmp_path)
    # deltas in the pack: similar files, repacked so the server reuses its deltas
    big = "".join(f"line {i}\n" for i in range(3000))
    first = repo.commit(
        {"index.html": "v1\n", "a/b/one.txt": big, "a/b/two.txt": big + "x\n"}, "v1"
    )
    subprocess.run(["git", "-C", str(repo.bare), "repack", "-adfq"], check=True)
    conf = configure(tmp_path, served.url("site.git"))

    result = once(program, conf)
    assert result.returncode == 0 and "applied" in result.stdout, result.stdout + result.stderr
    assert served_text(tmp_path) == "v1\n"
    assert served_text(tmp_path, "a/b/two.txt") == big + "x\n"
    assert (tmp_path / "state" / "current").readlink() == Path(f"trees/{first}")
    assert status(tmp_path)["commit"] == [first]

    second = repo.commit({"index.html": "v2\n"}, "v2")
    assert "applied" in once(program, conf).stdout
    assert served_text(tmp_path) == "v2\n"
    # the previous tree stays for readers in flight; none older
    assert sorted(p.name for p in (tmp_path / "state" / "trees").iterdir()) == sorted(
        [first, second]
    )
    assert once(program, conf).stdout.strip() == "unchanged"

    bad = repo.commit({"index.html": None, "other.html": "x\n"}, "no index")
    result = once(program, conf)
    assert result.returncode == 1
    assert f"rejected {bad[:12]}" in result.stdout and "index.html is missing" in result.stdout
    assert served_text(tmp_path) == "v2\n"
    st = status(tmp_path)
    assert st["commit"] == [second]
    assert any(r.startswith(bad) and "index.html" in r for r in st["rejected"])

    link = repo.commit({"index.html": "v3\n"}, "v3 with a link")
    (repo.work / "passwd").symlink_to("/etc/passwd")
    git(repo.work, "add", "-A")
    git(repo.work, "commit", "-q", "-m", "a symlink")
    git(repo.work, "push", "-q", str(repo.bare), "HEAD:main")
    result = once(program, conf)
    assert "symbolic link" in result.stdout, result.stdout
    assert served_text(tmp_path) == "v2\n"
    assert link  # v3 itself was never the branch head at a sync

    served.stop()
    result = once(program, conf)
    assert result.returncode == 1 and "unreachable" in result.stdout, result.stdout
    assert served_text(tmp_path) == "v2\n"
    served.start()
    fixed = repo.commit({"passwd": None}, "fixed")
    assert "applied" in once(program, conf).stdout
    assert status(tmp_path)["commit"] == [fixed] and served_text(tmp_path) == "v3\n"


def test_signed_mode_applies_only_commits_signed_by_the_allowed_key(
    program: Path, served: GitHttpServer, tmp_path: Path
) -> None:
    allowed, other = ssh_key(tmp_path, "allowed"), ssh_key(tmp_path, "other")
    repo = Repo(tmp_path)
    conf = configure(
        tmp_path,
        served.url("site.git"),
        signer=allowed.with_suffix(".pub").read_text().strip(),
    )
    unsigned = repo.commit({"index.html": "unsigned\n"}, "unsigned")
    result = once(program, conf)
    assert f"rejected {unsigned[:12]}" in result.stdout and "not signed" in result.stdout
    assert served_text(tmp_path) == "seed\n"

    wrong = repo.commit({"index.html": "wrong key\n"}, "wrong key", *signing_args(other))
    result = once(program, conf)
    assert f"rejected {wrong[:12]}" in result.stdout and "does not allow" in result.stdout
    assert served_text(tmp_path) == "seed\n"

    good = repo.commit({"index.html": "signed\n"}, "signed\n\nwith a body", *signing_args(allowed))
    result = once(program, conf)
    assert "applied" in result.stdout, result.stdout
    assert served_text(tmp_path) == "signed\n" and status(tmp_path)["commit"] == [good]


def test_no_repository_serves_the_seed(program: Path, tmp_path: Path) -> None:
    conf = configure(tmp_path, "")
    result = once(program, conf)
    assert result.returncode == 0 and "no repository" in result.stdout
    assert served_text(tmp_path) == "seed\n"


def test_an_unknown_branch_keeps_the_content(
    program: Path, served: GitHttpServer, tmp_path: Path
) -> None:
    Repo(tmp_path).commit({"index.html": "x\n"}, "x")
    conf = configure(tmp_path, served.url("site.git"), branch="nosuch")
    result = once(program, conf)
    assert result.returncode == 1 and "no branch nosuch" in result.stdout
    assert served_text(tmp_path) == "seed\n"


ZONE_OK = """\
$ORIGIN example.org.
$TTL 3600
@   IN SOA ns1 hostmaster ( 2026113001 10800 3600
        604800 3600 ) ; comment
    IN NS ns1
ns1 IN A 192.0.2.1
www 300 IN AAAA 2001:db8::1
mail IN MX 10 mx.example.net.
_imaps._tcp IN SRV 0 1 993 mail
txt IN TXT "v=spf1 -all" "second; string"
*.wild IN CNAME www
"""
ZONE_BAD = [
    ("www IN A 192.0.2.300\n", "not an IPv4 address"),
    ("www IN MX mail\n", "MX needs 2"),
    ("www IN BOGUS 1\n", "BOGUS"),
    ("$INCLUDE /etc/passwd\n", "$INCLUDE"),
    ('www IN TXT "open\n', "unterminated"),
    ("    IN A 192.0.2.1\n", "no owner"),
    ("w..w IN A 192.0.2.1\n", "empty label"),
    ("www IN SOA a b ( 1 2 3 4\n", "never closed"),
]


def validate(program: Path, tree: Path, *checks: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), "validate", str(tree), *checks], capture_output=True, text=True
    )


def test_zone_check(program: Path, tmp_path: Path) -> None:
    (tmp_path / "example.org.zone").write_text(ZONE_OK)
    assert validate(program, tmp_path, "zone:*.zone").stdout.strip() == "ok"
    for text, needle in ZONE_BAD:
        (tmp_path / "example.org.zone").write_text(text)
        result = validate(program, tmp_path, "zone:*.zone")
        assert result.returncode == 1 and needle in result.stdout, (text, result.stdout)
        assert result.stdout.startswith("example.org.zone:"), result.stdout


def test_aliases_check(program: Path, tmp_path: Path) -> None:
    (tmp_path / "virtual").write_text(
        "# role addresses\npostmaster@example.org alice@example.org\n"
        "team@example.org alice@example.org,\n    bob@example.org\n@example.net alice\n"
    )
    assert validate(program, tmp_path, "aliases:virtual").stdout.strip() == "ok"
    for text, needle in [
        ("root: alice\n", "no ':'"),
        ("a@example.org |/bin/sh\n", "only addresses"),
        ("a@example.org /etc/passwd\n", "only addresses"),
        ("a@example.org\n", "no destination"),
        ("a@example.org b\na@example.org c\n", "also on line 1"),
        ("a b@c@d\n", "not an address"),
        ("  b@example.org\n", "continuation"),
    ]:
        (tmp_path / "virtual").write_text(text)
        result = validate(program, tmp_path, "aliases:virtual")
        assert result.returncode == 1 and needle in result.stdout, (text, result.stdout)


def test_require_check_and_bad_check_kinds(program: Path, tmp_path: Path) -> None:
    assert "index.html is missing" in validate(program, tmp_path, "require:index.html").stdout
    result = validate(program, tmp_path, "frob:x")
    assert result.returncode == 2 and "unknown check kind" in result.stderr


# ------------------------------------------------------------------ recipe and settings

HOMEPAGE = (PROJECT.recipes_dir / "homepage" / "recipe.toml").read_text()


def test_homepage_declares_its_site_as_content() -> None:
    recipe = load_recipe(PROJECT.recipes_dir / "homepage")
    (site,) = recipe.content
    assert (site.name, site.path, site.checks) == ("site", "/srv/www", ("require:index.html",))
    settings = {s.name: s for s in recipe.settings}
    assert settings["site_repo"].per_device and settings["site_repo"].kind == SettingKind.URL
    text = config_text(site, {n: f"@@AK:{n}@@" for n in settings})
    assert "repo=@@AK:site_repo@@\n" in text and "check=require:index.html\n" in text


@pytest.mark.parametrize(
    ("old", "new", "field", "needle"),
    [
        ('repo = "site_repo"', 'repo = "site_rpo"', "content[0].repo", "did you mean"),
        ('interval = "site_interval"', 'interval = "site_branch"', "content[0].interval", "int"),
        ('repo = "site_repo"', 'repo = "server_name"', "content[0].repo", "per_device"),
        (
            'checks = ["require:index.html"]',
            'checks = ["exists:index.html"]',
            "content[0].checks[0]",
            "KIND:ARGUMENT",
        ),
        (
            'checks = ["require:index.html"]',
            'checks = ["require:../x"]',
            "content[0].checks[0]",
            "relative",
        ),
        (
            'signer = "site_signer"',
            'signer = "site_signer"\nreload = "nginx"',
            "content[0].reload",
            "unknown key 'reload'",
        ),
        ('path = "/srv/www"', 'path = "srv/www"', "content[0].path", "absolute"),
        ('name = "site"', 'name = "Site"', "content[0].name", "lowercase"),
    ],
)
def test_bad_content_sections_are_one_line_with_file_line_field(
    tmp_path: Path, old: str, new: str, field: str, needle: str
) -> None:
    directory = tmp_path / "homepage"
    shutil.copytree(PROJECT.recipes_dir / "homepage", directory)
    assert old in HOMEPAGE
    (directory / "recipe.toml").write_text(HOMEPAGE.replace(old, new, 1))
    with pytest.raises(UserError) as info:
        load_recipe(directory)
    message = str(info.value)
    assert "recipe.toml:" in message and f"{field}: " in message and needle in message, message
    assert "\n" not in message


def test_a_bad_content_section_fails_the_build_with_exit_2(scratch_project: Path) -> None:  # noqa: F811
    recipe = scratch_project / "recipes" / "homepage" / "recipe.toml"
    recipe.write_text(recipe.read_text().replace('branch = "site_branch"', 'branch = "site_brnch"'))
    result = build_in(scratch_project)
    assert_clean_failure(
        result, scratch_project, "recipe.toml:", "content[0].branch", "site_branch"
    )


def test_a_bad_repository_setting_is_refused_with_exit_2(scratch_project: Path) -> None:  # noqa: F811
    result = build_in(scratch_project, "-s", "site_repo=ftp://example.org/site.git")
    assert_clean_failure(
        result, scratch_project, "recipe.toml:", "settings.site_repo", "http(s) URL"
    )


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (SettingKind.URL, "https://git.example.org:8443/a/site.git", "file:///etc"),
        (SettingKind.URL, "http://10.0.2.2:8080/site.git", "https://"),
        (SettingKind.GITREF, "release/1.x", "../main"),
        (SettingKind.GITREF, "main", "main.lock"),
        (SettingKind.GITREF, "feature-2", "-x"),
    ],
)
def test_url_and_gitref_kinds(kind: SettingKind, good: str, bad: str) -> None:
    assert convert(kind, good) == good
    with pytest.raises(ValueError):
        convert(kind, bad)


def test_sshkey_kind(tmp_path: Path) -> None:
    key = ssh_key(tmp_path, "k").with_suffix(".pub").read_text().strip()
    assert convert(SettingKind.SSHKEY, key) == key
    rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 x@y"
    for bad in (
        rsa,
        "ssh-ed25519 AAAA",
        "ssh-ed25519 !!!",
        key.replace("ssh-ed25519", "ssh-ed448"),
    ):
        with pytest.raises(ValueError):
            convert(SettingKind.SSHKEY, bad)


def test_mailserver_takes_extra_aliases_from_git(program: Path) -> None:
    recipe = load_recipe(PROJECT.recipes_dir / "mailserver")
    (aliases,) = recipe.content
    assert aliases.path == "/etc/mailserver/aliases"
    assert aliases.checks == ("require:virtual", "aliases:virtual")
    main_cf = (recipe.directory / "postfix" / "main.cf").read_text()
    assert f"texthash:{aliases.path}/virtual" in main_cf
    # the image's copy passes the checks a commit must pass
    seed = recipe.directory / str(aliases.seed)
    result = validate(program, seed, *aliases.checks)
    assert result.stdout.strip() == "ok", result.stdout


def test_install_puts_program_seed_link_config_and_service_into_the_root() -> None:
    from appliancekit.board import Architecture
    from appliancekit.content.install import PROGRAM, install
    from appliancekit.tree import RootTree

    recipe = load_recipe(PROJECT.recipes_dir / "homepage")
    tree = RootTree()
    tree.ensure_dir("/srv/www")
    settings = {s.name: f"@@AK:{s.name}@@" for s in recipe.settings if s.per_device}
    parts = install(
        tree, recipe, Architecture.AMD64, lambda _i, _e: str(recipe.directory / "site"), settings
    )
    assert tree.entries["/srv/www"].kind == "symlink"
    assert tree.entries["/srv/www"].target == "/data/content/site/current"
    assert tree.entries["/usr/share/appliancekit/content/site/index.html"].mode == 0o644
    program = tree.entries[PROGRAM]
    assert program.mode == 0o755 and program.source is not None
    assert program.source.read_bytes()[:4] == b"\x7fELF"
    (service,) = parts.services
    assert service.user == "content" and service.exec == (
        PROGRAM,
        "run",
        "/etc/appliancekit/content",
    )
    assert "/data/content/site 990 990 0755" in parts.boot_dirs
    ((path, text, _owner),) = parts.files
    assert path == "/etc/appliancekit/content/site.conf"
    assert "repo=@@AK:site_repo@@" in text and "seed=/usr/share/appliancekit/content/site" in text
