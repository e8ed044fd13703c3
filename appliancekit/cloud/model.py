"""Clouds: clouds/NAME.toml (one domain, its member appliances) as frozen dataclasses.

Loaded and checked the way recipes are (`appliancekit.tomlsource`): unknown keys are
rejected, and every error is one line with file:line and the field. Format::

    [cloud]                          # required
    domain = "example.org"           # required: the zone the DNS member serves
    summary = "..."
    network = "10.42.0.0/24"         # required: the members' own network (IPv4)
    network6 = "fd42:0:0:1::/64"     # optional: the same network's IPv6 prefix
    gateway = "10.42.0.1"            # optional: the network's router (for real devices)
    ttl = 300                        # TTL of the generated records
    dkim_selector = "mail"           # the mail member's DKIM selector
    dmarc = "p=quarantine"           # DMARC policy tags (rua= is added: postmaster@domain)
    mta_sts_mode = "testing"         # testing | enforce | none
    caa = ["letsencrypt.org"]        # CAs allowed to issue for the domain (CAA issue)
    acme_url = "https://..."         # ACME directory the TLS members get certificates from
                                     # (default: Let's Encrypt; "" turns ACME off)
    acme_ca = "MIIF..."              # root CA of the ACME server's HTTPS (base64 DER);
                                     # default: the recipes' (ISRG Root X1)

    [[member]]                       # one per appliance; exactly one has role = "dns"
    name = "mail"                    # required: host name in the domain (mail.example.org)
    recipe = "mailserver"            # required: a recipe in recipes/
    board = "qemu-virt-arm64"        # required: a board in boards/
    role = "mail"                    # dns | web | mail | matrix | none (default)
    address = "10.42.0.4"            # required: in `network`
    address6 = "fd42:0:0:1::4"       # in `network6` (needs it)
    aliases = ["smtp"]               # more host names in the domain for this member
    settings = { users = "..." }     # recipe settings: per-device ones go on the card,
                                     # the others into the image build

    [monitoring]                     # optional: every member exports its metrics (the
    scrape_interval = "15s"          # node-exporter and agent of appliancekit.monitoring);
    alert_after = "2m"               # a member with role = "monitoring" (recipe
    control = false                  # monitoring) scrapes them all and alerts. control:
                                     # the agents also take services down/up (a token)

What a role fills in for the member (its recipe must declare those settings) is in
`appliancekit.cloud.roles`; the records each role publishes are in
`appliancekit.cloud.records`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from appliancekit.board import Board, find_board, list_boards
from appliancekit.devsettings import UNIVERSAL
from appliancekit.errors import UserError
from appliancekit.project import Project
from appliancekit.recipe import Recipe, find_recipe, list_recipes
from appliancekit.settings_kinds import check_hostname
from appliancekit.tomlsource import (
    Field,
    KeyPath,
    TomlSource,
    array_of_tables,
    boolean,
    check_table,
    choice,
    did_you_mean,
    integer,
    list_of,
    string,
    table,
    type_name,
)

CLOUD_SUFFIX = ".toml"
LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
_LABEL_RE = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_SELECTOR_RE = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"


class Role(StrEnum):
    """What a member is to the domain: decides the records and the settings it gets."""

    DNS = "dns"
    WEB = "web"
    MAIL = "mail"
    MATRIX = "matrix"
    MONITORING = "monitoring"
    NONE = "none"


class MtaStsMode(StrEnum):
    TESTING = "testing"
    ENFORCE = "enforce"
    NONE = "none"


@dataclass(frozen=True)
class Member:
    name: str
    recipe: Recipe
    board: Board
    role: Role
    address: ipaddress.IPv4Address
    prefix: int  # of the cloud's network
    address6: ipaddress.IPv6Address | None = None
    prefix6: int | None = None
    aliases: tuple[str, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()  # as written in the cloud file (strings)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "recipe": self.recipe.name,
            "board": self.board.name,
            "role": self.role.value,
            "address": str(self.address),
            "address6": str(self.address6) if self.address6 else None,
            "aliases": list(self.aliases),
        }


@dataclass(frozen=True)
class CloudMonitoring:
    """The cloud's [monitoring]: every member exports metrics; the monitoring member
    scrapes them."""

    scrape_interval: str = "15s"
    alert_after: str = "2m"
    control: bool = False  # the agents accept the control token (services down/up/kill)


@dataclass(frozen=True)
class Cloud:
    name: str
    source_file: Path
    domain: str
    network: ipaddress.IPv4Network
    members: tuple[Member, ...]
    summary: str = ""
    network6: ipaddress.IPv6Network | None = None
    gateway: ipaddress.IPv4Address | None = None
    ttl: int = 300
    dkim_selector: str = "mail"
    dmarc: str = "p=quarantine"
    mta_sts_mode: MtaStsMode = MtaStsMode.TESTING
    caa: tuple[str, ...] = ("letsencrypt.org",)
    monitoring: CloudMonitoring | None = None
    acme_url: str = LETSENCRYPT
    acme_ca: str | None = None  # None: each recipe's default root
    _lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def with_role(self, role: Role) -> Member | None:
        return next((m for m in self.members if m.role == role), None)

    @property
    def dns(self) -> Member:
        member = self.with_role(Role.DNS)
        assert member is not None  # the loader insists on one
        return member

    def fqdn(self, host: str) -> str:
        """'mail' -> 'mail.example.org.'; '@' -> the apex."""
        return f"{self.domain}." if host == "@" else f"{host}.{self.domain}."

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "file": str(self.source_file),
            "domain": self.domain,
            "summary": self.summary,
            "network": str(self.network),
            "network6": str(self.network6) if self.network6 else None,
            "members": [m.to_json() for m in self.members],
            "monitoring": (
                {
                    "scrape_interval": self.monitoring.scrape_interval,
                    "alert_after": self.monitoring.alert_after,
                    "control": self.monitoring.control,
                }
                if self.monitoring
                else None
            ),
        }


# --------------------------------------------------------------------------- parsers


def _domain() -> Any:
    def parse(src: TomlSource, value: Any, path: KeyPath) -> str:
        value = string()(src, value, path).lower().rstrip(".")
        try:
            check_hostname(value)
        except ValueError as exc:
            src.fail(path, str(exc))
        if "." not in value:
            src.fail(path, f"{value!r} is not a domain name (e.g. example.org)")
        return value

    return parse


def _network(version: int) -> Any:
    def parse(src: TomlSource, value: Any, path: KeyPath) -> Any:
        value = string()(src, value, path)
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            src.fail(path, f"not a network in CIDR notation ({exc})")
        if net.version != version:
            src.fail(path, f"{value!r} is not an IPv{version} network")
        if net.num_addresses < 4:
            src.fail(path, f"{value!r} is too small for members")
        return net

    return parse


def _address(version: int) -> Any:
    def parse(src: TomlSource, value: Any, path: KeyPath) -> Any:
        value = string()(src, value, path)
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            src.fail(path, f"{value!r} is not an IP address")
        if address.version != version:
            src.fail(path, f"{value!r} is not an IPv{version} address")
        return address

    return parse


def _setting_values() -> Any:
    """A table of settings: strings, ints and bools (written as true/false)."""

    def parse(src: TomlSource, value: Any, path: KeyPath) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            src.fail(path, f"expected a table of settings, got {type_name(value)}")
        out = []
        for name, raw in value.items():
            if isinstance(raw, bool):
                text = "true" if raw else "false"
            elif isinstance(raw, int | str):
                text = str(raw)
            else:
                src.fail(path + (name,), f"expected a string, int or bool, got {type_name(raw)}")
            out.append((name, text))
        return tuple(out)

    return parse


_LABEL = string(pattern=_LABEL_RE, hint="a host name label: a-z, 0-9 and '-'")

CLOUD_FIELDS = (
    Field("domain", _domain(), required=True),
    Field("summary", string(nonempty=False), default=""),
    Field("network", _network(4), required=True),
    Field("network6", _network(6)),
    Field("gateway", _address(4)),
    Field("ttl", integer(30, 86400), default=300),
    Field("dkim_selector", string(pattern=_SELECTOR_RE, hint="a DNS label"), default="mail"),
    Field(
        "dmarc",
        string(
            pattern=r"p=(none|quarantine|reject)(;.*)?",
            hint="p=none|quarantine|reject[; more DMARC tags]",
        ),
        default="p=quarantine",
    ),
    Field("mta_sts_mode", choice(MtaStsMode, what="mode"), default=MtaStsMode.TESTING),
    Field("caa", list_of(_domain()), default=("letsencrypt.org",)),
    Field(
        "acme_url",
        string(
            nonempty=False,
            pattern=r"(https?://[A-Za-z0-9.:\[\]/_%+-]+)?",
            hint='an http(s) URL, or "" for no ACME',
        ),
        default=LETSENCRYPT,
    ),
    Field("acme_ca", string(pattern=r"[A-Za-z0-9+/]+=*", hint="base64 (a PEM body on one line)")),
)

MEMBER_FIELDS = (
    Field("name", _LABEL, required=True),
    Field("recipe", string(), required=True),
    Field("board", string(), required=True),
    Field("role", choice(Role, what="role"), default=Role.NONE),
    Field("address", _address(4), required=True),
    Field("address6", _address(6)),
    Field("aliases", list_of(_LABEL), default=()),
    Field("settings", _setting_values(), default=()),
)

_DURATION = string(pattern=r"[1-9][0-9]*(ms|s|m|h|d)", hint='a Prometheus duration, e.g. "15s"')
MONITORING_FIELDS = (
    Field("scrape_interval", _DURATION, default="15s"),
    Field("alert_after", _DURATION, default="2m"),
    Field("control", boolean(), default=False),
)

TOP_FIELDS = (
    Field("cloud", table(CLOUD_FIELDS), required=True),
    Field("member", array_of_tables(MEMBER_FIELDS), required=True),
    Field("monitoring", table(MONITORING_FIELDS), default=None),
)


# --------------------------------------------------------------------------- loading


def list_clouds(clouds_dir: Path) -> list[str]:
    clouds_dir = Path(clouds_dir)
    if not clouds_dir.is_dir():
        return []
    return sorted(p.stem for p in clouds_dir.glob(f"*{CLOUD_SUFFIX}") if p.is_file())


def find_cloud(name: str, project: Project) -> Cloud:
    """clouds/NAME.toml, or a path to a cloud file."""
    candidate = Path(name)
    if candidate.suffix == CLOUD_SUFFIX and candidate.is_file():
        return load_cloud(candidate, project)
    known = list_clouds(project.clouds_dir)
    if name not in known:
        listing = f"known clouds: {', '.join(known)}" if known else "there are no clouds there"
        raise UserError(
            f"unknown cloud {name!r} in {project.clouds_dir}{did_you_mean(name, known)}; {listing}"
        )
    return load_cloud(project.clouds_dir / f"{name}{CLOUD_SUFFIX}", project)


def load_cloud(path: Path, project: Project) -> Cloud:
    src = TomlSource.from_file(path)
    top = check_table(src, src.data, (), TOP_FIELDS)
    head = top["cloud"]
    network: ipaddress.IPv4Network = head["network"]
    network6: ipaddress.IPv6Network | None = head["network6"]
    if head["gateway"] is not None and head["gateway"] not in network:
        src.fail(("cloud", "gateway"), f"{head['gateway']} is not in the cloud's network {network}")
    recipes = list_recipes(project.recipes_dir)
    boards = list_boards(project.boards_dir)
    members: list[Member] = []
    claimed: dict[str, KeyPath] = {}  # host name -> where it was first claimed
    addresses: dict[object, KeyPath] = {}
    recipe_cache: dict[str, Recipe] = {}
    board_cache: dict[str, Board] = {}
    for index, raw in enumerate(top["member"]):
        base: KeyPath = ("member", index)

        def where(key: str, base: KeyPath = base) -> KeyPath:
            return base + (key,)

        for offset, host in enumerate((raw["name"], *raw["aliases"])):
            at = where("name") if offset == 0 else where("aliases") + (offset - 1,)
            if host in claimed:
                first = claimed[host]
                src.fail(
                    at,
                    f"host name {host!r} is already claimed by member {_member_at(top, first)} "
                    f"(line {src.line_of(first)})",
                )
            claimed[host] = at
        if raw["recipe"] not in recipes:
            src.fail(
                where("recipe"),
                f"no recipe {raw['recipe']!r} in {project.recipes_dir}"
                f"{did_you_mean(raw['recipe'], recipes)}",
            )
        if raw["board"] not in boards:
            src.fail(
                where("board"),
                f"no board {raw['board']!r} in {project.boards_dir}"
                f"{did_you_mean(raw['board'], boards)}",
            )
        recipe = recipe_cache.get(raw["recipe"]) or find_recipe(raw["recipe"], project.recipes_dir)
        recipe_cache[recipe.name] = recipe
        if top["monitoring"] is not None and recipe.backend == "debian":
            from appliancekit.monitoring import augment

            try:
                recipe = augment(recipe)
            except UserError as exc:
                src.fail(("monitoring",), f"member {raw['name']!r}: {exc.message}")
        board = board_cache.get(raw["board"]) or find_board(raw["board"], project.boards_dir)
        board_cache[board.name] = board
        if recipe.backend != "debian":
            src.fail(
                where("recipe"),
                f"recipe {recipe.name!r} is built with {recipe.backend}; cloud members must be debian-backend images (booted here)",
            )
        address = raw["address"]
        if address not in network or address in (
            network.network_address,
            network.broadcast_address,
        ):
            src.fail(
                where("address"),
                f"{address} is not a host address in the cloud's network {network}",
            )
        address6 = raw["address6"]
        if address6 is not None:
            if network6 is None:
                src.fail(where("address6"), "an IPv6 address needs cloud.network6")
            if address6 not in network6 or address6 == network6.network_address:
                src.fail(
                    where("address6"),
                    f"{address6} is not a host address in cloud.network6 {network6}",
                )
        for key, value in (("address", address), ("address6", address6)):
            if value is None:
                continue
            if value in addresses:
                first = addresses[value]
                src.fail(
                    where(key),
                    f"address {value} is already member {_member_at(top, first)}'s (line {src.line_of(first)})",
                )
            addresses[value] = where(key)
        declared = {s.name for s in recipe.settings} | set(UNIVERSAL)
        for position, (name, _value) in enumerate(raw["settings"]):
            if name not in declared:
                src.fail(
                    where("settings") + (name,),
                    f"recipe {recipe.name!r} has no setting {name!r}{did_you_mean(name, declared)}",
                )
            del position
        members.append(
            Member(
                name=raw["name"],
                recipe=recipe,
                board=board,
                role=raw["role"],
                address=address,
                prefix=network.prefixlen,
                address6=address6,
                prefix6=network6.prefixlen if network6 and address6 else None,
                aliases=raw["aliases"],
                settings=raw["settings"],
            )
        )
    if not members:
        src.fail(("member",), "a cloud needs members ([[member]])")
    from appliancekit.cloud.roles import check_roles

    check_roles(members, src)
    roles: dict[Role, int] = {}
    for index, member in enumerate(members):
        if member.role == Role.NONE:
            continue
        if member.role in roles:
            other = members[roles[member.role]].name
            src.fail(
                ("member", index, "role"),
                f"role {member.role.value!r} is already member {other!r}'s; a cloud has one of each",
            )
        roles[member.role] = index
    if Role.MONITORING in roles and top["monitoring"] is None:
        src.fail(
            ("member", roles[Role.MONITORING], "role"),
            "a monitoring member scrapes the members' agents: turn them on with [monitoring]",
        )
    if Role.DNS not in roles:
        src.fail(
            ("cloud",),
            'the cloud has no DNS member: one [[member]] needs role = "dns" (the appliance that serves the domain\'s zone)',
        )
    cloud = Cloud(
        name=path.stem,
        source_file=path,
        domain=head["domain"],
        network=network,
        network6=network6,
        gateway=head["gateway"],
        members=tuple(members),
        summary=head["summary"],
        ttl=head["ttl"],
        dkim_selector=head["dkim_selector"],
        dmarc=head["dmarc"],
        mta_sts_mode=head["mta_sts_mode"],
        caa=head["caa"],
        monitoring=CloudMonitoring(**top["monitoring"]) if top["monitoring"] else None,
        acme_url=head["acme_url"],
        acme_ca=head["acme_ca"],
    )
    return cloud


def _member_at(top: Mapping[str, Any], path: KeyPath) -> str:
    return repr(top["member"][path[1]]["name"])
