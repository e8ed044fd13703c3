"""agent.json is written by Python (appliancekit/agent/install.py) and read by the Go agent
(updater/config.go): the two must agree on every key, and every program the config names
must survive minimise."""

from __future__ import annotations

import re

from appliancekit.agent.install import TOOL_KEYS, UPDATER, agent_config
from appliancekit.agent.packages import FSCK_FAT, MINISIGN
from appliancekit.board import find_board
from appliancekit.project import Project
from appliancekit.recipe import find_recipe


def go_struct_tags(struct: str) -> set[str]:
    source = (UPDATER / "config.go").read_text()
    body = re.search(rf"type {struct} struct {{\n(.*?)\n}}", source, re.S)
    assert body, f"no {struct} in config.go"
    return set(re.findall(r'json:"([a-z_0-9]+)"', body.group(1)))


def test_go_reads_every_key_python_writes(project: Project) -> None:
    recipe = find_recipe("homepage", project.recipes_dir)
    board = find_board("qemu-virt-arm64", project.boards_dir)
    written = set(agent_config(recipe, board, "KEY", 1))
    read = go_struct_tags("AgentConfig")
    assert written == read, (sorted(written - read), sorted(read - written))


def test_every_tool_the_agent_runs_is_named_by_the_config(project: Project) -> None:
    recipe = find_recipe("homepage", project.recipes_dir)
    board = find_board("qemu-virt-arm64", project.boards_dir)
    config = agent_config(recipe, board, None, 1)
    tools = {str(config[key]) for key in TOOL_KEYS}
    assert {MINISIGN, FSCK_FAT} <= tools
    assert all(path.startswith("/usr/") for path in tools), tools
    # the Go source runs no program by a path of its own: only through the config
    for path in (UPDATER).glob("*.go"):
        if path.name.endswith("_test.go"):
            continue
        assert not re.search(r'"/usr/s?bin/', path.read_text()), path.name
