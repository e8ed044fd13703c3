"""`appliancekit cloud list|build|test|run|dns`: a domain's appliances as one cloud."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliancekit.cloud import pdns, records
from appliancekit.cloud.model import Cloud, find_cloud, list_clouds
from appliancekit.cloud.secrets import CloudSecrets, load_or_create
from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.commands.build import images_option
from appliancekit.errors import UserError
from appliancekit.output import emit_json
from appliancekit.project import find_project

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


COMMANDS = [cloud_group]


def _exit(passed: bool) -> None:
    sys.exit(0 if passed else 1)
