"""A/B of board settings: one recipe built with the board file as it is (A) and with some
fields changed (B), both boot-tested in the same run, boots interleaved A, B, A, B... so that
the machine's other load falls on both alike. Prints the boot markers and boot to healthy of
B beside A's (the baseline) and their ratio. It reproduces the boot-time facts the board
files rely on (docs/measurements.md), e.g.

    .venv/bin/python -m bench.board_ab --board qemu-virt-arm64 --set kernel.strip_module_signatures=false
    .venv/bin/python -m bench.board_ab --board ec2-x86_64 --set 'qemu.net_device="virtio-net-pci"'
    .venv/bin/python -m bench.board_ab --board cubieboard --unset firmware.config.env.bootdelay

--set TABLE.KEY=VALUE takes a TOML value; --unset TABLE.KEY drops the line (the field's
default applies). Builds use the shared package cache; they are not timed here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from appliancekit.board import find_board, load_board  # noqa: E402
from appliancekit.boottest import boot_test  # noqa: E402
from appliancekit.build import BuildPlan, build  # noqa: E402
from appliancekit.cache import Cache, default_cache_dir  # noqa: E402
from appliancekit.output import Reporter  # noqa: E402
from appliancekit.recipe import find_recipe, resolve_settings  # noqa: E402
from bench.figures import Figure, Unit, table  # noqa: E402


class EditError(Exception):
    pass


def _split(path: str, tables: list[str]) -> tuple[str, str]:
    """`firmware.config.env.bootdelay` -> ('firmware.config', 'env.bootdelay'): the longest
    prefix that is a table of the file, the rest is the key (quoted in the file if dotted)."""
    for table_name in sorted(tables, key=len, reverse=True):
        if path.startswith(table_name + "."):
            return table_name, path[len(table_name) + 1 :]
    raise EditError(f"{path}: no [table] of the board file is a prefix of it")


def edit_toml(text: str, path: str, value: str | None) -> str:
    """Set `path` (TABLE.KEY) to the TOML `value` in `text`, or drop it when value is None.
    Checked by parsing the result: a misspelt key fails here, not as a silent no-op."""
    lines = text.splitlines()
    headers = {
        m.group(1).strip(): i
        for i, line in enumerate(lines)
        if (m := re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line))
    }
    table_name, key = _split(path, list(headers))
    start = headers[table_name] + 1
    end = min((i for i in headers.values() if i >= start), default=len(lines))
    key_re = re.compile(rf'\s*("{re.escape(key)}"|{re.escape(key)})\s*=')
    found = next((i for i in range(start, end) if key_re.match(lines[i])), None)
    if found is None and value is None:
        raise EditError(f"{path}: not in the board file")
    span = 1
    if found is not None and "[" in lines[found].split("=", 1)[1] and "]" not in lines[found]:
        while "]" not in lines[found + span - 1]:
            span += 1  # a multi-line array
    quoted = f'"{key}"' if "." in key else key
    new = [] if value is None else [f"{quoted} = {value}"]
    if found is None:
        lines[start:start] = new
    else:
        lines[found : found + span] = new
    result = "\n".join(lines) + "\n"
    table = tomllib.loads(result)
    for part in table_name.split("."):
        table = table[part]
    if value is None:
        if key in table:
            raise EditError(f"{path}: still set after dropping its line")
    elif table.get(key) != tomllib.loads(f"x = {value}")["x"]:
        raise EditError(f"{path}: could not be set to {value}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="homepage")
    parser.add_argument("--board", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE")
    parser.add_argument("--unset", action="append", default=[], metavar="TABLE.KEY")
    parser.add_argument("--runs", type=int, default=3, help="boots of each variant (best taken)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.set and not args.unset:
        parser.error("nothing to change: give --set or --unset")

    recipe = find_recipe(args.recipe, REPO / "recipes")
    original = find_board(args.board, REPO / "boards")
    text = original.source_file.read_text()
    try:
        for change in args.set:
            field, _, value = change.partition("=")
            text = edit_toml(text, field, value)
        for field in args.unset:
            text = edit_toml(text, field, None)
    except (EditError, tomllib.TOMLDecodeError) as e:
        print(f"bench: {original.source_file}: {e}", file=sys.stderr)
        return 2
    cache = Cache(default_cache_dir())
    with tempfile.TemporaryDirectory(prefix="bench-ab.") as tmp:
        work = Path(tmp)
        (work / "boards").mkdir()
        changed_file = work / "boards" / original.source_file.name
        changed_file.write_text(text)
        variants = {"as is": original, "changed": load_board(changed_file)}
        images = {}
        for label, board in variants.items():
            plan = BuildPlan(recipe, board, resolve_settings(recipe, {}), work / label / "images")
            images[label] = build(plan, cache, Reporter())
        best: dict[str, dict[str, float]] = {label: {} for label in variants}
        for _ in range(args.runs):
            for label, board in variants.items():
                result = images[label]
                report = boot_test(result.output_dir, result.manifest, board, log_dir=work)
                if not report.passed:
                    print(f"bench: {label}: boot test failed: {report.failure}", file=sys.stderr)
                    return 1
                times = {**report.markers, "healthy": report.boot_to_healthy or 0.0}
                for name, seconds in times.items():
                    best[label][name] = min(best[label].get(name, seconds), seconds)
    names = [n for n in best["as is"] if n in best["changed"]]
    figures = [
        Figure(f"QEMU start to {name}", best["changed"][name], Unit.SECONDS,
               "board as is", best["as is"][name])
        for name in names
    ]  # fmt: skip
    changes = [*args.set, *(f"-{u}" for u in args.unset)]
    if args.json:
        json.dump(
            {
                "recipe": args.recipe,
                "board": args.board,
                "changes": changes,
                "runs": args.runs,
                "figures": [f.to_json() for f in figures],
            },
            sys.stdout,
            indent=2,
        )
        print()
        return 0
    print(f"{args.recipe} on {args.board}, changed: {', '.join(changes)}; best of {args.runs}")
    print()
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
