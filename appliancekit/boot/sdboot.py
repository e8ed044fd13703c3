"""systemd-boot with boot counting: how UEFI boards (the uki boot path) choose a slot.

The ESP holds Debian's systemd-boot at the removable-media path (EFI/BOOT/BOOTX64.EFI or
BOOTAA64.EFI: firmware boots it with no NVRAM boot entry, as on a fresh AMI), one UKI per
slot (`slot-a/appliance.efi`, `slot-b/appliance.efi`) and one Boot Loader Specification
type #1 entry per slot in `loader/entries/`:

    title appliancekit homepage (slot b)
    sort-key appliancekit
    version 2
    efi /slot-b/appliance.efi
    options console=ttyS0 ... ak.slot=b

The loader's own rules do the rest (systemd's src/boot/boot.c, boot_entry_compare and
config_select_default_entry, as shipped in trixie's systemd-boot-efi 257):
- with no `default` in loader.conf and no LoaderEntryDefault/OneShot variable, the first
  entry in sort order boots; entries with the same sort-key sort by `version`, newest
  first. The version is a generation number the update agent raises with every arming,
  so the newest armed slot is preferred (a permitted downgrade too);
- an entry whose file name carries a counter, `ak-slot-b+1.conf` (1 try left, 0 done), is
  renamed by the loader BEFORE it starts it, to `ak-slot-b+0-1.conf`;
- an entry with 0 tries left sorts after every other entry. So a trial boot that does not
  commit (crash, hang and watchdog reset, panic, failed health check) leaves
  `ak-slot-b+0-1.conf`, and the next boot takes the committed slot's entry, with no help;
- committing is what systemd-bless-boot does: rename the entry to drop the counter
  (`ak-slot-b+0-1.conf` -> `ak-slot-b.conf`). The update agent does that rename on the ESP.
No `default` pattern is ever written: systemd-boot matches it even against entries with no
tries left, which would keep booting a bad release.

The entry's `options` carry the slot's whole command line, `ak.slot=` included: with Secure
Boot off (these UKIs are unsigned) systemd-stub takes the loader's options instead of the
UKI's .cmdline, so one UKI serves either slot and the agent writes text, never a PE image.
The UKI's own .cmdline keeps the command line it was built with (slot a), for firmware that
starts it directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from appliancekit.board import Board
from appliancekit.boot import BootInputs, BootLayout
from appliancekit.boot.slotswitch import Mechanism, SlotSwitch
from appliancekit.disk import PartitionRole
from appliancekit.errors import UserError

LOADER_CONF = "loader/loader.conf"
ENTRIES_DIR = "loader/entries"
SORT_KEY = "appliancekit"
LOADER_NAME = re.compile(r"systemd-boot(x64|aa64|ia32|arm)\.efi")
FIRST_VERSION = 1  # slot a's entry in a new image; every arming writes the highest + 1
# Boot Loader Specification: ID, then optionally +LEFT or +LEFT-DONE before .conf
_COUNTED = re.compile(r"(?P<id>[^+/]+?)(?:\+(?P<left>[0-9]+)(?:-(?P<done>[0-9]+))?)?\.conf")
_SLOT_WORD = re.compile(r"(?<!\S)ak\.slot=\S*")


@dataclass(frozen=True)
class EntryName:
    """A type #1 entry's file name, split as systemd-boot splits it."""

    entry_id: str  # the name without counter and .conf: what LoaderEntrySelected holds
    tries_left: int | None  # None: no boot counting (a committed entry)
    tries_done: int = 0

    @property
    def file_name(self) -> str:
        if self.tries_left is None:
            return f"{self.entry_id}.conf"
        done = f"-{self.tries_done}" if self.tries_done else ""
        return f"{self.entry_id}+{self.tries_left}{done}.conf"

    @property
    def slot(self) -> str | None:
        prefix = "ak-slot-"
        return self.entry_id[len(prefix) :] if self.entry_id.startswith(prefix) else None

    @property
    def bad(self) -> bool:
        """No tries left: the loader sorts it last (a trial that did not commit)."""
        return self.tries_left == 0

    def after_boot(self) -> EntryName:
        """What the loader renames this entry to when it starts it."""
        if self.tries_left is None or self.tries_left == 0:
            return self
        return EntryName(self.entry_id, self.tries_left - 1, self.tries_done + 1)

    def blessed(self) -> EntryName:
        """What systemd-bless-boot (the agent's commit) renames it to."""
        return EntryName(self.entry_id, None)


def entry_id(slot: str) -> str:
    return f"ak-slot-{slot}"


def parse_entry_name(name: str) -> EntryName:
    match = _COUNTED.fullmatch(name)
    if match is None:
        raise UserError(f"{name!r} is not a boot loader entry file name", field=ENTRIES_DIR)
    left, done = match.group("left"), match.group("done")
    return EntryName(
        match.group("id"), None if left is None else int(left), int(done) if done else 0
    )


def slot_cmdline(cmdline: str, slot: str) -> str:
    """`cmdline` naming `slot` in its ak.slot= word (added if missing)."""
    words = _SLOT_WORD.sub("", cmdline).split()
    return " ".join([*words, f"ak.slot={slot}"])


def render_loader_conf() -> str:
    return (
        "# written by appliancekit: no menu, no editor, no entries but the slots'\n"
        "# (the default is the newest slot whose entry has tries left: no `default` line)\n"
        "timeout 0\n"
        "editor no\n"
        "auto-entries no\n"
        "auto-firmware no\n"
    )


def render_entry(slot: str, version: int, cmdline: str, title: str, uki: str) -> str:
    """Slot `slot`'s entry; `uki` is the UKI's name inside the slot's directory."""
    return (
        f"title {title} (slot {slot})\n"
        f"sort-key {SORT_KEY}\n"
        f"version {version}\n"
        f"efi /slot-{slot}/{uki}\n"
        f"options {slot_cmdline(cmdline, slot)}\n"
    )


def parse_entry(text: str) -> dict[str, str]:
    """A type #1 entry's `key value` lines (the last of a repeated key wins, as in the
    loader for these single-valued keys)."""
    entry: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        entry[key] = value.strip()
    return entry


def default_entry(entries: dict[str, str]) -> str | None:
    """The file name of the entry the loader would boot among `entries` (file name ->
    text), by systemd-boot's rules for entries that all share one sort-key: tries-left 0
    last, then the highest version. For reports and fast checks; the slow tests let the
    real loader decide."""
    if not entries:
        return None

    def rank(name: str) -> tuple[bool, int]:
        version = int(parse_entry(entries[name]).get("version", "0") or 0)
        return parse_entry_name(name).bad, -version

    best = min(rank(name) for name in entries)
    # equal rank: the loader puts the higher ID first
    return max(
        (name for name in entries if rank(name) == best),
        key=lambda name: parse_entry_name(name).entry_id,
    )


# -- the uki boot path with systemd-boot -------------------------------------------------------


def board_loader(board: Board) -> tuple[str, str] | None:
    """(ESP destination, package path) of systemd-boot in the board's [firmware] files."""
    for destination, source in board.firmware.files:
        if LOADER_NAME.fullmatch(source.rsplit("/", 1)[-1]):
            return destination, source
    return None


def loader_destination(files: Mapping[str, Path]) -> str | None:
    for destination, source in files.items():
        if LOADER_NAME.fullmatch(source.name):
            return destination
    return None


def layout(
    inputs: BootInputs,
    files: dict[str, Path],
    stubs: Mapping[str, Path],
    build_uki: Callable[[Path, Path], Path],
) -> BootLayout:
    """The ESP with systemd-boot: the loader where the board puts it, loader.conf, slot a's
    entry (committed, no counter) and the UKI in the slot's directory, named by the stub's
    [firmware] files destination."""
    if len(stubs) != 1:
        raise UserError(
            "a uki board with systemd-boot takes one EFI stub (the UKI of each slot)",
            file=inputs.board.source_file,
            field="firmware.files",
        )
    ((uki_name, stub),) = stubs.items()
    if "/" in uki_name.strip("/"):
        raise UserError(
            f"the UKI's destination {uki_name!r} is a name inside the slot's directory, not a path",
            file=inputs.board.source_file,
            field="firmware.files",
        )
    uki_name = uki_name.strip("/")
    files = {dest: src for dest, src in files.items() if dest not in stubs}
    conf = inputs.workdir / "loader.conf"
    conf.write_text(render_loader_conf())
    entry = inputs.workdir / "ak-slot-a.conf"
    title = f"appliancekit {inputs.board.name}"
    entry.write_text(render_entry("a", FIRST_VERSION, inputs.cmdline, title, uki_name))
    files[LOADER_CONF] = conf
    files[f"{ENTRIES_DIR}/{entry_id('a')}.conf"] = entry
    uki = build_uki(stub, inputs.workdir / uki_name)
    return BootLayout(files=files, slot_files={uki_name: uki}, role=PartitionRole.ESP)


def uki_name(board: Board) -> str:
    names = [d.strip("/") for d, s in board.firmware.files if s.endswith(".efi.stub")]
    return names[0] if names else ""


def slot_switch(board: Board) -> SlotSwitch:
    uki = uki_name(board)
    return SlotSwitch(
        mechanism=Mechanism.SYSTEMD_BOOT,
        implemented=True,
        arm=(
            f"on the ESP: delete {ENTRIES_DIR}/ak-slot-NEW*.conf, write slot-NEW/{uki}, then"
            f" {ENTRIES_DIR}/ak-slot-NEW+1.conf (new file, then rename) with version = the"
            " highest entry's + 1 and options = the release's command line with ak.slot=NEW"
        ),
        commit=(
            "rename the booted slot's entry without its counter (ak-slot-NEW+0-1.conf ->"
            " ak-slot-NEW.conf), as systemd-bless-boot does"
        ),
        fallback=(
            "systemd-boot renames ak-slot-NEW+1.conf to ak-slot-NEW+0-1.conf before it starts"
            " it; an entry with no tries left sorts after the committed one, which boots next"
        ),
        tries=1,
        state=f"boot:{ENTRIES_DIR}",
        paths={
            "loader_conf": LOADER_CONF,
            "entries": ENTRIES_DIR,
            "entry_id": "ak-slot-{slot}",
            "uki": uki,
            "sort_key": SORT_KEY,
        },
    )
