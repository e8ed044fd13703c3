"""`appliancekit cloud list|build|test|audit|run|dns`: a domain's appliances as one cloud."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import click

from appliancekit.build import BuildPlan, BuildResult
from appliancekit.cloud import pdns, records, testca
from appliancekit.cloud.boot import boot_cloud, build_members, make_cards, write_flash_settings
from appliancekit.cloud.checks import Check, apply_records, run_checks
from appliancekit.cloud.model import Cloud, Member, find_cloud, list_clouds
from appliancekit.cloud.secrets import CloudSecrets, load_or_create
from appliancekit.cloud.testrun import run_cloud_test
from appliancekit.cloud.tlschecks import acme_members
from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.commands.build import images_option, run_build
from appliancekit.errors import UserError
from appliancekit.output import emit_json
from appliancekit.project import find_project
from appliancekit.recipe import resolve_settings

cloud_argument = click.argument("name")


def _load(name: str) -> Cloud:
    return find_cloud(name, find_project())


def state_dir(cloud: Cloud, images: Path | None) -> Path:
    """Where a cloud keeps its secrets and cards: images/clouds/NAME/."""
    return (images or find_project().images_dir).resolve() / "clouds" / cloud.name


def _secrets(cloud: Cloud, images: Path | None) -> CloudSecrets:
    return load_or_create(state_dir(cloud, images))


@click.group("cloud")
def cloud_group() -> None:
    """A domain's appliances as one cloud (clouds/NAME.toml): records, builds, boots."""


@cloud_group.command("list")
@json_option
@handle_errors
def list_command(json_mode: bool) -> None:
    """The clouds in clouds/ with their domains and members."""
    project = find_project()
    clouds = [find_cloud(name, project) for name in list_clouds(project.clouds_dir)]
    if json_mode:
        emit_json([c.to_json() for c in clouds])
        return
    for cloud in clouds:
        click.echo(
            f"{cloud.name}: {cloud.domain} ({cloud.summary})"
            if cloud.summary
            else f"{cloud.name}: {cloud.domain}"
        )
        for m in cloud.members:
            role = "" if m.role.value == "none" else f" [{m.role.value}]"
            click.echo(f"  {m.name:<10} {m.recipe.name:<12} {m.board.name:<16} {m.address}{role}")


@cloud_group.command("dns")
@cloud_argument
@click.option(
    "--apply",
    "apply_url",
    metavar="URL",
    help="Apply the records through the PowerDNS HTTP API at URL (e.g. http://ns.example.org:8081).",
)
@click.option(
    "--api-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the API's X-API-Key (with --apply).",
)
@click.option(
    "--server", default="localhost", show_default=True, help="PowerDNS server id in the API."
)
@images_option
@json_option
@click.pass_context
@handle_errors
def dns_command(
    ctx: click.Context,
    name: str,
    apply_url: str | None,
    api_key_file: Path | None,
    server: str,
    images: Path | None,
    json_mode: bool,
) -> None:
    """The zone NAME's members need (printed), or applied to a PowerDNS with --apply.

    Applying is idempotent; records made by hand are left alone, and one that conflicts
    with a generated record stops the run before anything changes (exit 2)."""
    cloud = _load(name)
    if apply_url and not api_key_file:
        raise UserError("--apply needs --api-key-file", field="--api-key-file")
    if api_key_file and not apply_url:
        raise UserError("--api-key-file goes with --apply URL", field="--apply")
    wanted = records.generate(cloud, _secrets(cloud, images))
    zone = f"{cloud.domain}."
    if not apply_url:
        if json_mode:
            emit_json({"zone": zone, "rrsets": [r.to_json() for r in wanted]})
            return
        for r in wanted:
            for content in r.contents:
                click.echo(f"{r.name} {r.ttl} IN {r.type} {content}")
        return
    assert api_key_file is not None
    reporter = reporter_from(ctx, json_mode)
    client = pdns.PowerDNS(
        apply_url, pdns.read_api_key(api_key_file), server=server, key_source=str(api_key_file)
    )
    reporter.step(f"applying {len(wanted)} RRsets for {zone} at {apply_url}")
    result = pdns.apply(
        client, zone, wanted, cloud.name, nameservers=[cloud.fqdn("ns1")], source=cloud.source_file
    )
    if json_mode:
        emit_json(result.to_json())
        return
    click.echo(
        f"{zone}: {len(result.replace)} RRsets set, {len(result.delete)} removed, "
        f"{len(result.unchanged)} unchanged, {len(result.left_alone)} not ours left alone"
        + (" (zone created)" if result.create_zone else "")
    )


def _builds(
    ctx: click.Context, cloud: Cloud, secrets: CloudSecrets, images: Path | None, json_mode: bool
) -> dict[str, BuildResult]:
    reporter = reporter_from(ctx, json_mode)
    images_dir = (images or find_project().images_dir).resolve()

    def builder(member: Member, build_settings: Mapping[str, str]) -> BuildResult:
        plan = BuildPlan(
            member.recipe, member.board, resolve_settings(member.recipe, build_settings), images_dir
        )
        reporter.step(f"{member.name}: {plan.name}")
        return run_build(plan, reporter)

    return build_members(cloud, secrets, builder)


@cloud_group.command("build")
@cloud_argument
@images_option
@json_option
@click.pass_context
@handle_errors
def build_command(ctx: click.Context, name: str, images: Path | None, json_mode: bool) -> None:
    """Build every member's image and the cloud's secrets (the DKIM key, the DNS API key);
    write each member's QEMU card (images/clouds/NAME/cards/MEMBER.img, for `cloud run`) and
    its per-device settings for `flash --settings` onto a real device
    (images/clouds/NAME/settings/MEMBER.toml)."""
    cloud = _load(name)
    secrets = _secrets(cloud, images)
    builds = _builds(ctx, cloud, secrets, images, json_mode)
    state = state_dir(cloud, images)
    cards = make_cards(cloud, secrets, builds, state / "cards")
    rows = [
        {
            "member": n,
            "image_dir": str(builds[n].output_dir),
            "card": str(c.disk),
            "flash_settings": str(
                write_flash_settings(cloud, secrets, c.member, state / "settings")
            ),
            "rebuilt": builds[n].rebuilt,
        }
        for n, c in cards.items()
    ]
    if json_mode:
        emit_json({"cloud": cloud.name, "members": rows})
        return
    for row in rows:
        state_word = "built" if row["rebuilt"] else "up to date"
        click.echo(
            f"{row['member']}: image {row['image_dir']} ({state_word}); QEMU card {row['card']};"
            f" settings for flash: {row['flash_settings']}"
        )


@cloud_group.command("test")
@cloud_argument
@images_option
@click.option(
    "--timeout", default=1200.0, show_default=True, help="Seconds for the whole cloud to pass."
)
@json_option
@click.pass_context
@handle_errors
def test_command(
    ctx: click.Context, name: str, images: Path | None, timeout: float, json_mode: bool
) -> None:
    """Boot every member on one network (QEMU, no root), apply the records through the DNS
    member's API and check the members across the network. Cards are throw-away copies with
    each recipe's [test] settings (probe accounts) under the cloud's. Members that use ACME
    get their certificates from a test CA (Debian's pebble, started here) instead of the
    cloud's acme_url; their chains are verified against its root, and renewed."""
    cloud = _load(name)
    secrets = _secrets(cloud, images)
    builds = _builds(ctx, cloud, secrets, images, json_mode)
    reporter_from(ctx, json_mode).step(f"booting {len(cloud.members)} members of {cloud.name}")
    with tempfile.TemporaryDirectory(prefix="cloud-test.") as tmp:
        test_ca = (
            testca.prepare(Path(tmp) / "ca") if acme_members(cloud) and cloud.acme_url else None
        )
        cards = make_cards(
            cloud,
            secrets,
            builds,
            Path(tmp) / "cards",
            test=True,
            test_ca=test_ca,
        )
        logs = state_dir(cloud, images) / "test"
        reporter = reporter_from(ctx, json_mode)
        report = run_cloud_test(
            cloud,
            secrets,
            cards,
            logs,
            timeout=timeout,
            on_result=lambda r: reporter.step(f"{r.name}: ok after {r.seconds:.0f}s"),
            test_ca=test_ca,
        )
    if json_mode:
        emit_json(report.to_json())
    else:
        for check in report.checks:
            mark = "ok  " if check.ok else "FAIL"
            click.echo(
                f"  {mark} {check.name}: {check.detail} ({check.seconds:.1f}s, {check.attempts} tries)"
            )
        if report.passed:
            click.echo(
                f"{cloud.name}: PASS, all {len(cloud.members)} members healthy {report.healthy:.1f}s after the first QEMU start"
            )
        else:
            click.echo(f"{cloud.name}: FAIL: {report.failure}", err=True)
            for member, tail in report.serial_tails.items():
                click.echo(f"--- {member}: last serial lines ---\n{tail}", err=True)
        click.echo(f"serial logs: {logs}/MEMBER/serial.log")
    sys.exit(0 if report.passed else 1)


@cloud_group.command("audit")
@cloud_argument
@images_option
@click.option(
    "--junit",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the results as JUnit XML to this file (for CI).",
)
@click.option(
    "--timeout", default=1200.0, show_default=True, help="Seconds for the boot and the scan."
)
@click.option(
    "--ports",
    default="1-65535",
    show_default=True,
    help="TCP ports to scan, in nmap's syntax (1-1024,8080); declared ports are always added.",
)
@json_option
@click.pass_context
@handle_errors
def audit_command(
    ctx: click.Context,
    name: str,
    images: Path | None,
    junit: Path | None,
    timeout: float,
    ports: str,
    json_mode: bool,
) -> None:
    """The runtime audit of every member: boot the cloud, wait until each member answers its
    probes, then scan every TCP port of each from the scanner appliance on the cloud's
    network. A member fails when a port answers that it does not declare, or a declared port
    does not answer. Exits 0 when every member passes, 1 otherwise."""
    from appliancekit.audit import to_json, to_junit, to_text
    from appliancekit.audit.runtime import SCANNER_BOARD, SCANNER_RECIPE, port_spec, scan_cloud
    from appliancekit.board import find_board
    from appliancekit.commands.build import make_plan

    port_spec(ports, [])  # a bad --ports fails now, not after the boot
    cloud = _load(name)
    secrets = _secrets(cloud, images)
    builds = _builds(ctx, cloud, secrets, images, json_mode)
    reporter = reporter_from(ctx, json_mode)
    scanner = run_build(make_plan(SCANNER_RECIPE, SCANNER_BOARD, (), images), reporter)
    reporter.step(f"booting {len(cloud.members)} members of {cloud.name}, then the scanner")
    with tempfile.TemporaryDirectory(prefix="cloud-audit.") as tmp:
        cards = make_cards(cloud, secrets, builds, Path(tmp) / "cards", test=True)
        with boot_cloud(cloud, cards, Path(tmp) / "run") as booted:
            report = scan_cloud(
                booted,
                scanner.output_dir,
                scanner.manifest,
                find_board(SCANNER_BOARD, find_project().boards_dir),
                timeout=timeout,
                ports=ports,
            )
    if junit is not None:
        try:
            junit.write_text(to_junit(report))
        except OSError as exc:
            raise UserError(f"cannot write the JUnit report: {exc.strerror}", file=junit) from None
    click.echo(to_json(report) if json_mode else to_text(report), nl=False)
    sys.exit(0 if report.passed else 1)


@cloud_group.command("run")
@cloud_argument
@images_option
@json_option
@click.pass_context
@handle_errors
def run_command(ctx: click.Context, name: str, images: Path | None, json_mode: bool) -> None:
    """Boot every member on one network and keep them running (Ctrl-C stops them); the
    records are applied once the DNS member answers. Cards (and so each member's /data) are
    kept in images/clouds/NAME/cards/ between runs."""
    cloud = _load(name)
    secrets = _secrets(cloud, images)
    builds = _builds(ctx, cloud, secrets, images, json_mode)
    state = state_dir(cloud, images)
    cards = make_cards(cloud, secrets, builds, state / "cards")
    with boot_cloud(cloud, cards, state / "run", snapshot=False) as booted:
        ports = {
            n: {f"{f.guest_port}/{f.protocol}": f"127.0.0.1:{f.host_port}" for f in b.forwards}
            for n, b in booted.members.items()
        }
        results = run_checks(
            booted,
            [
                Check(
                    "records applied through the DNS member's API",
                    lambda: apply_records(booted, secrets),
                )
            ],
            time.monotonic() + 300,
        )
        if json_mode:
            emit_json(
                {
                    "cloud": cloud.name,
                    "lan": booted.lan.to_json(),
                    "forwards": ports,
                    "records": [r.to_json() for r in results],
                }
            )
        else:
            for member, forwards in ports.items():
                click.echo(f"{member}: " + ", ".join(f"{g} -> {h}" for g, h in forwards.items()))
            for r in results:
                click.echo(f"{r.name}: {r.detail}")
            click.echo("running; Ctrl-C stops every member", err=True)
        sys.stdout.flush()
        try:
            while all(booted.cluster.running().values()):
                time.sleep(1)
        except KeyboardInterrupt:
            pass


COMMANDS = [cloud_group]
