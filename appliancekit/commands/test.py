"""`appliancekit test`: build if needed, boot under QEMU, run the probes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliancekit.boottest import BootTestReport, boot_test
from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.commands.build import (
    backend_option,
    board_option,
    build_summary,
    build_to_boot,
    images_option,
    make_plan,
    mirror_option,
    recipe_argument,
    settings_option,
)
from appliancekit.output import emit_json


def print_report(report: BootTestReport) -> None:
    for probe in report.probes:
        mark = "ok  " if probe.ok else "FAIL"
        click.echo(
            f"  {mark} {probe.name}: {probe.detail} ({probe.seconds:.1f}s, {probe.attempts} tries)"
        )
    if report.markers:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.markers.items())
        click.echo(f"  guest uptime at markers: {stages}")
    if report.passed:
        click.echo(f"{report.name}: PASS, healthy {report.boot_to_healthy:.1f}s after QEMU start")
    else:
        click.echo(f"{report.name}: FAIL: {report.failure}", err=True)
        if report.serial_tail:
            click.echo("--- last serial console lines ---", err=True)
            click.echo(report.serial_tail, err=True)
    click.echo(f"serial log: {report.serial_log}")


@click.command("test")
@recipe_argument
@board_option
@settings_option
@images_option
@mirror_option
@backend_option
@click.option("--timeout", default=240.0, show_default=True, help="Seconds to wait for the probes.")
@click.option(
    "--disk",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Boot this copy of the image instead.",
)
@json_option
@click.pass_context
@handle_errors
def test_command(
    ctx: click.Context,
    recipe: str,
    board: str,
    settings: tuple[str, ...],
    images: Path | None,
    mirror: str | None,
    backend: str | None,
    timeout: float,
    disk: Path | None,
    json_mode: bool,
) -> None:
    """Build RECIPE for a board if needed, boot it under QEMU and run its probes."""
    reporter = reporter_from(ctx, json_mode)
    plan = make_plan(recipe, board, settings, images)
    result = build_to_boot(plan, reporter, backend, mirror=mirror)
    reporter.step(
        f"boot-testing {plan.name} under {plan.board.qemu.binary} -M {plan.board.qemu.machine}"
    )
    report = boot_test(result.output_dir, result.manifest, plan.board, disk=disk, timeout=timeout)
    if json_mode:
        emit_json({"build": build_summary(result), "boot_test": report.to_json()})
    else:
        print_report(report)
    sys.exit(0 if report.passed else 1)


COMMANDS = [test_command]
