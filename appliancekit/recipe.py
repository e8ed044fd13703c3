"""Recipes: recipes/NAME/recipe.toml (+ templates beside it) as frozen dataclasses.

The loader (load_recipe) validates every key and reports errors as UserError with file, line
and dotted field path (``service[1].exec``). Settings are resolved separately
(resolve_settings) because they come from the recipe defaults plus the command line.

Format (every table and key below is optional unless marked *required*; unknown keys are
errors, with a "did you mean" suggestion)::

    [appliance]                  # required
    name = "homepage"            # required; must equal the directory name ([a-z0-9-])
    summary = "..."              # required
    backend = "debian"           # debian (default) | nixos

    [debian]                     # required when backend = "debian"
    suite = "trixie"             # default: the board's suite
    packages = ["nginx-light"]   # required, non-empty; Debian package names (resolved by apt)
    keep = ["/etc/nginx/mime.types"]  # absolute; files/dirs kept from packages by minimise
    executables = []             # absolute; extra ELF entry points besides services' exec[0]
    libraries = []               # dlopen'd libraries: sonames or absolute paths

    [python]                     # wheels from PyPI run by the suite's Debian Python
    requirements = ["matrix-synapse==1.163.2"]  # required; top-level pins (NAME==VERSION)
    version = "3.13"             # the Debian Python (python3.13-minimal in debian.packages)
    lock = "python.lock"         # in the recipe dir; every wheel per arch with its sha256:
                                 # python -m appliancekit.sources.pypi lock recipes/NAME
    site = "/usr/lib/python3/dist-packages"  # where the wheels are unpacked
    exclude = []                 # fnmatch patterns of absolute paths left out of the stdlib
                                 # and site dir (test suites etc. are always left out)
    bytecode = true              # compile .pyc at build time (unchecked-hash)
    sources = true               # false: ship each compiled module as X.pyc without X.py
                                 # (smaller; tracebacks then show no source lines)
    keep_sources = []            # with sources = false: patterns of .py files kept anyway
                                 # (code that looks for a module's file by name)
    deps = true                  # false: the lock holds the requirements alone (a wheel
                                 # used for its bundled files, not its Python dependencies)
    arches = []                  # the only architectures it builds for (empty: all), e.g.
                                 # when a pure wheel bundles native code for some of them

    [npm]                        # npm packages run by the suite's Debian Node (nodejs)
    requirements = ["ipfs@0.66.1"]  # required; top-level pins (NAME@X.Y.Z)
    lock = "npm.lock"            # in the recipe dir; every package with its integrity hash:
                                 # python -m appliancekit.sources.npm lock recipes/NAME
    prefix = "/usr/lib/npm"      # node_modules/ goes under here
    omit_optional = false        # true: leave out packages only optional dependencies need
    overrides = {}               # NAME = "VERSION": npm's overrides, for a dependency whose
                                 # newer releases broke semver (the lock records them)
    exclude = []                 # fnmatch patterns of absolute paths also left out (tests,
                                 # docs, type definitions, other platforms' binaries always are)

    [settings.NAME]              # NAME: [A-Za-z_][A-Za-z0-9_]* (used as {{ settings.NAME }})
    kind = "path"                # required: string|path|domain|secret|int|bool|email|domains
                                 # |users|hostname|address (values: settings_kinds.py)
    default = "site"             # absent => required on the command line (-s NAME=VALUE);
                                 # int/bool kinds take a TOML int/bool, the others a string;
                                 # a relative path default is relative to the recipe dir
    help = "..."
    per_device = false           # given per device (flash, EC2 user-data) instead of baked in;
                                 # NAME then [a-z][a-z0-9_]*, and not a path. hostname and
                                 # net_* are built in (UNIVERSAL_SETTINGS)

    [[user]]                     # generated into passwd/group; "root" is built in
    name = "www-data"            # required, unique
    uid = 33                     # required
    gid = 33                     # default: uid
    home = "/nonexistent"        # absolute
    groups = []                  # supplementary group names

    [[service]]                  # at least one for the debian backend
    name = "nginx"               # required, unique
    exec = ["/usr/sbin/nginx", "-g", "daemon off;"]  # required; exec[0] absolute
    user = "www-data"            # "root" (default) or a declared [[user]]
    root_reason = "..."          # why it must run as root (`appliancekit audit` asks for it)
    environment = { KEY = "value" }  # strings only
    working_directory = "/"      # absolute

    [[file]]                     # a generated file (jinja2, rendered with settings)
    path = "/etc/nginx/nginx.conf"   # required, absolute, unique
    template = "nginx.conf.j2"   # exactly one of template (a file in the recipe dir) ...
    content = "..."              # ... or inline content
    mode = "0644"                # octal string (default "0644"); TOML ints are refused
    owner = "root"               # root or a declared [[user]]

    [[tree]]                     # copy a host directory into the root
    path = "/srv/www"            # required, absolute
    source = "{{ settings.site }}"   # required; jinja2 against the settings
    owner = "root"               # root or a declared [[user]]

    [[content]]                  # a tree pulled from a git branch (appliancekit/content/spec.py)
    name = "site"                # required; path, repo, branch, interval required too
    path = "/srv/www"

    [data]
    paths = ["/var/lib/foo"]     # absolute; these live on the /data partition
    owners = {}                  # PATH = "USER": who owns a path (default: the user of the
                                 # first non-root service, or the package's owner)

    [network]
    ports = [80]                 # TCP ports, 1..65535

    [monitoring]                 # export metrics (appliancekit.monitoring adds what it takes:
    port = 9100                  # node-exporter and the agent, on this port with a token)
    [backup]                     # back /data up with restic, restore it at first boot
    paths = ["/var/vmail"]       # [data] paths or paths under one (default: every [data] path)
    exclude = ["*.hs"]           # restic --exclude patterns
    sqlite = ["/var/lib/foo/db.sqlite3"]  # copied with SQLite's online backup first
                                 # (appliancekit/backup/: the agent, its settings, the status)

    [[probe]]
    kind = "http"                # required: http|tcp|dns|smtp|imap|dns-tcp|closed|pdns-api|matrix
                                 # |smtp-send|imap-message|managesieve
    port = 80                    # required, 1..65535
    name = ""                    # label for reports
    path = "/"                   # http: starts with "/"
    status = 200                 # http: 100..599
    contains = "Hello"           # http body / tcp banner / smtp+imap greeting
    query = "example.test. SOA"  # dns (required for dns): "NAME TYPE"
    expect = ""                  # dns: expected answer text
    timeout = 60                 # seconds, > 0

    [nixos]                      # required when backend = "nixos"; free-form NixOS options
    "services.nginx.enable" = true   # nested tables are flattened to dotted option names;
                                     # stored as sorted (option, value) pairs, lists as tuples
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from appliancekit.backup.agent import expand as expand_backup
from appliancekit.backup.section import FIELDS as _BACKUP
from appliancekit.backup.section import BackupSection, build_section
from appliancekit.content.spec import FIELDS as _CONTENT
from appliancekit.content.spec import ContentTree, build_content
from appliancekit.errors import UserError
from appliancekit.settings_kinds import (
    DEVICE_NAME_RE,
    SECRET_KINDS,
    SettingKind,
    as_text,
    convert,
)
from appliancekit.templating import render_string
from appliancekit.tomlsource import (
    Field,
    KeyPath,
    TomlSource,
    abs_path,
    anything,
    array_of_tables,
    boolean,
    check_table,
    choice,
    did_you_mean,
    format_path,
    freeze,
    integer,
    list_of,
    map_of,
    number,
    string,
    string_table,
    suggest,
    table,
    type_name,
)

HOSTNAME_SETTING = "hostname"


class ProbeKind(StrEnum):
    """The probe kinds appliancekit ships, named for code and tests. A recipe may use any kind
    a module of appliancekit/probes registers: a new kind is a new module there, nothing more."""

    HTTP = "http"
    TCP = "tcp"
    DNS = "dns"
    SMTP = "smtp"
    IMAP = "imap"
    PDNS_API = "pdns-api"  # PowerDNS HTTP API: create a zone + A record (params)
    DNS_TCP = "dns-tcp"  # like dns, over TCP
    CLOSED = "closed"  # nothing listens on this guest port
    SMTP_SEND = "smtp-send"  # send a message over SMTP: STARTTLS, AUTH if a user is given
    IMAP_MESSAGE = "imap-message"  # IMAP login, find a message by subject, check a header
    MANAGESIEVE = "managesieve"  # ManageSieve: STARTTLS, AUTH, upload + activate a script
    MATRIX = "matrix"  # Matrix client API: register (shared secret), post, read back (params)


def probe_kind_of(name: str) -> ProbeKind | str:
    """The ProbeKind member of a shipped kind; any other kind by its name."""
    try:
        return ProbeKind(name)
    except ValueError:
        return name


def _probe_kind(src: TomlSource, value: Any, path: KeyPath) -> ProbeKind | str:
    """A kind some module of appliancekit/probes registers (shipped kinds listed first)."""
    from appliancekit.probes import KINDS  # lazily: appliancekit.probes imports this module

    shipped = [str(kind) for kind in ProbeKind]
    known = shipped + sorted(set(KINDS) - set(shipped))
    return probe_kind_of(choice(known, what="probe kind")(src, value, path))


class ProbePhase(StrEnum):
    """When a probe runs. A recipe with first/reboot probes is booted twice on a writable
    copy of its image: state made on the first boot must still be there after the reboot."""

    EVERY = "every"
    FIRST = "first"  # first boot only (e.g. create data through the service's API)
    REBOOT = "reboot"  # after the reboot only (e.g. the data is still there)


@dataclass(frozen=True)
class Setting:
    name: str
    kind: SettingKind
    default: str | int | bool | None  # None: required, no default
    help: str = ""
    per_device: bool = False  # injected at flash/publish time rather than baked in

    @property
    def secret(self) -> bool:
        """Never shown on the console or in command output."""
        return self.kind in SECRET_KINDS


# Every appliance has these per-device settings, whether its recipe declares them or not:
# the initramfs reads them itself (the host name; a static address instead of DHCP on NIC
# number net_interface, as a cloud's members get; a data volume of its own, as `deploy`
# gives EC2 members). A recipe may declare one to give it a default, with the same kind.
UNIVERSAL_SETTINGS = (
    Setting(
        HOSTNAME_SETTING,
        SettingKind.HOSTNAME,
        None,
        "The device's host name (set per device at flash time)",
        per_device=True,
    ),
    Setting("net_address", SettingKind.ADDRESS, None, "Static IPv4 ADDR/PREFIX", per_device=True),
    Setting("net_address6", SettingKind.ADDRESS, None, "Static IPv6 ADDR/PREFIX", per_device=True),
    Setting("net_gateway", SettingKind.ADDRESS, None, "Default route", per_device=True),
    Setting(
        "net_interface",
        SettingKind.INT,
        None,
        "NIC number (1-based) of net_address",
        per_device=True,
    ),
    Setting(
        "data_volume",
        SettingKind.SERIAL,
        None,
        "Serial number (EBS volume id) of a disk that holds /data instead of the data partition",
        per_device=True,
    ),
    # the update agent's (appliancekit/agent): where and when it looks for new releases
    Setting(
        "update_url",
        SettingKind.STRING,
        None,
        "Deploy repository the update agent polls (http(s)://HOST/PATH; RECIPE/BOARD/ is added)",
        per_device=True,
    ),
    Setting(
        "update_interval",
        SettingKind.INT,
        None,
        "Seconds between polls (default 3600)",
        per_device=True,
    ),
    Setting(
        "update_window",
        SettingKind.STRING,
        None,
        "Maintenance window HH:MM-HH:MM (UTC) for rebooting into a new release (default: at once)",
        per_device=True,
    ),
    Setting(
        "update_allow_downgrade",
        SettingKind.BOOL,
        None,
        "Take a published release older than the running one",
        per_device=True,
    ),
    Setting(
        "update_status_port",
        SettingKind.INT,
        None,
        "One of the recipe's ports on which the update agent serves its status as JSON",
        per_device=True,
    ),
)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str = "/nonexistent"
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Service:
    name: str
    exec: tuple[str, ...]  # argv; exec[0] is an absolute path inside the root
    user: str = "root"
    environment: tuple[tuple[str, str], ...] = ()
    working_directory: str = "/"
    root_reason: str = ""  # why it runs as root; `appliancekit audit` fails a root one without
    # Commands run (as the service's user, in order) before exec on every start, or only
    # while `creates` does not exist yet: first-boot initialisation without a shell.
    setup: tuple[tuple[str, ...], ...] = ()
    creates: str | None = None
    # Not started at boot: another service starts it (the backup agent, once /data is ready)
    down: bool = False


@dataclass(frozen=True)
class GeneratedFile:
    path: str  # absolute path inside the root
    template: str | None = None  # jinja2 template file relative to the recipe dir
    content: str | None = None  # inline content (jinja2), alternative to template
    mode: int = 0o644
    owner: str = "root"


@dataclass(frozen=True)
class TreeCopy:
    """Copy a host directory (usually a `path` setting) into the root."""

    path: str  # destination inside the root
    source: str  # jinja2 expression evaluated against settings, e.g. "{{ settings.site }}"
    owner: str = "root"


@dataclass(frozen=True)
class Probe:
    kind: ProbeKind | str  # str: a kind registered by a probes/ module that ProbeKind does not name
    port: int
    name: str = ""
    path: str = "/"  # http
    status: int = 200  # http
    contains: str = ""  # http body / tcp banner / smtp+imap greeting
    query: str = ""  # dns: "NAME TYPE"
    expect: str = ""  # dns: expected answer text
    timeout: float = 60.0
    phase: ProbePhase = ProbePhase.EVERY
    params: tuple[tuple[str, str], ...] = ()  # kind-specific, jinja2 over the device settings

    def param(self, name: str, default: str = "") -> str:
        return dict(self.params).get(name, default)


@dataclass(frozen=True)
class DebianSection:
    packages: tuple[str, ...]
    suite: str | None = None  # None: the board's / global default
    keep: tuple[str, ...] = ()  # data paths kept from packages (files or whole directories)
    executables: tuple[str, ...] = ()  # extra ELF entry points besides the services' exec[0]
    libraries: tuple[str, ...] = ()  # dlopen'd libraries (sonames or absolute paths)


@dataclass(frozen=True)
class PythonSection:
    """Wheels from PyPI (pinned by a lock file in the recipe dir) for the Debian Python."""

    requirements: tuple[str, ...]  # top-level NAME==VERSION pins
    version: str = "3.13"
    lock: str = "python.lock"
    site: str = "/usr/lib/python3/dist-packages"
    exclude: tuple[str, ...] = ()
    bytecode: bool = True
    sources: bool = True  # False: ship the compiled .pyc in place of the .py (smaller)
    keep_sources: tuple[str, ...] = ()  # with sources = false: these .py stay (patterns)
    deps: bool = True  # False: the lock pins the requirements without their dependencies
    arches: tuple[str, ...] = ()  # Debian architectures it builds for; empty: every one


@dataclass(frozen=True)
class MonitoringSection:
    """[monitoring]: the appliance exports its metrics; `appliancekit.monitoring.augment`
    adds the services, users, settings and port that takes."""

    port: int = 9100


@dataclass(frozen=True)
class NpmSection:
    """npm packages (pinned by a lock file in the recipe dir) for the Debian Node."""

    requirements: tuple[str, ...]  # top-level NAME@VERSION pins
    lock: str = "npm.lock"
    prefix: str = "/usr/lib/npm"
    omit_optional: bool = False
    overrides: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    directory: Path  # the recipe directory (templates are resolved from here)
    source_file: Path  # recipe.toml
    debian: DebianSection
    services: tuple[Service, ...]
    users: tuple[User, ...] = ()
    files: tuple[GeneratedFile, ...] = ()
    trees: tuple[TreeCopy, ...] = ()
    data_paths: tuple[str, ...] = ()  # paths that live on /data (symlinked from the root)
    data_owners: tuple[tuple[str, str], ...] = ()  # (path, user) where the default is wrong
    ports: tuple[int, ...] = ()  # TCP ports the service listens on (beyond the probes' ports)
    probes: tuple[Probe, ...] = ()
    settings: tuple[Setting, ...] = ()
    backend: str = "debian"
    nixos: tuple[tuple[str, object], ...] = ()  # dotted NixOS option -> value
    # Per-device values the boot test writes onto its copy of the image (as `flash -s`
    # would), so secrets have test values without a default baked into every image.
    test_settings: tuple[tuple[str, str], ...] = ()
    python: PythonSection | None = None
    content: tuple[ContentTree, ...] = ()  # trees pulled from git by content-sync
    monitoring: MonitoringSection | None = None
    npm: NpmSection | None = None
    backup: BackupSection | None = None  # [backup]: expanded into services, settings, files


@dataclass(frozen=True)
class ResolvedSettings:
    """Recipe settings after defaults and command-line overrides; values are typed."""

    values: tuple[tuple[str, str | int | bool], ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, str | int | bool]:
        return dict(self.values)


RECIPE_FILE = "recipe.toml"
BACKENDS = ("debian", "nixos")

# --------------------------------------------------------------------------- field tables

_NAME_RE = r"[a-z0-9][a-z0-9-]*"
_SETTING_NAME_RE = r"[A-Za-z_][A-Za-z0-9_]*"
_USER_RE = r"[a-z_][a-z0-9_-]{0,31}"
_PACKAGE_RE = r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?"
_MODE_RE = re.compile(r"0?[0-7]{3,4}")
_PORT = integer(1, 65535)


def _octal_mode(src: TomlSource, value: Any, path: KeyPath) -> int:
    if not isinstance(value, str):
        src.fail(path, f'expected an octal string like "0644", got {type_name(value)}')
    if not _MODE_RE.fullmatch(value):
        src.fail(path, f'invalid mode {value!r}; expected an octal string like "0644"')
    return int(value, 8)


def _argv(src: TomlSource, value: Any, path: KeyPath) -> tuple[str, ...]:
    argv = list_of(string(nonempty=False), nonempty=True)(src, value, path)
    if not argv[0].startswith("/"):
        src.fail(path + (0,), f"exec[0] must be an absolute path, got {argv[0]!r}")
    return argv


def _template_name(src: TomlSource, value: Any, path: KeyPath) -> str:
    value = string()(src, value, path)
    if value.startswith("/"):
        src.fail(path, f"must be relative to the recipe directory, got {value!r}")
    return value


_APPLIANCE = (
    Field(
        "name",
        string(pattern=_NAME_RE, hint="use lowercase letters, digits and '-'"),
        required=True,
    ),
    Field("summary", string(), required=True),
    Field("backend", choice(BACKENDS, what="backend"), default="debian"),
)
_DEBIAN = (
    Field("suite", string(), default=None),
    Field(
        "packages",
        list_of(string(pattern=_PACKAGE_RE, hint="expected a Debian package name"), nonempty=True),
        required=True,
    ),
    Field("keep", list_of(abs_path()), default=()),
    Field("executables", list_of(abs_path()), default=()),
    Field("libraries", list_of(string()), default=()),
)
_PIN_RE = r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9.+!_-]+"
_PYTHON = (
    Field(
        "requirements",
        list_of(string(pattern=_PIN_RE, hint="pin it: NAME==VERSION"), nonempty=True),
        required=True,
    ),
    Field("version", string(pattern=r"3\.\d+", hint='e.g. "3.13"'), default="3.13"),
    Field("lock", _template_name, default="python.lock"),
    Field("site", abs_path(), default="/usr/lib/python3/dist-packages"),
    Field("exclude", list_of(abs_path()), default=()),
    Field("bytecode", boolean(), default=True),
    Field("sources", boolean(), default=True),
    Field("keep_sources", list_of(abs_path()), default=()),
    Field("deps", boolean(), default=True),
    Field("arches", list_of(choice(("amd64", "arm64", "armhf"), what="architecture")), default=()),
)
_NPM_PIN_RE = r"(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*@\d+\.\d+\.\d+[0-9A-Za-z.+-]*"
_NPM = (
    Field(
        "requirements",
        list_of(string(pattern=_NPM_PIN_RE, hint="pin it: NAME@X.Y.Z"), nonempty=True),
        required=True,
    ),
    Field("lock", _template_name, default="npm.lock"),
    Field("prefix", abs_path(), default="/usr/lib/npm"),
    Field("omit_optional", boolean(), default=False),
    Field("overrides", string_table(), default=()),
    Field("exclude", list_of(abs_path()), default=()),
)
_SETTING = (
    Field("kind", choice(SettingKind, what="setting kind"), required=True),
    Field("default", anything(), default=None),
    Field("help", string(nonempty=False), default=""),
    Field("per_device", boolean(), default=False),
)
_USER = (
    Field("name", string(pattern=_USER_RE, hint="expected a Unix user name"), required=True),
    Field("uid", integer(0, 2**32 - 2), required=True),
    Field("gid", integer(0, 2**32 - 2), default=None),
    Field("home", abs_path(), default="/nonexistent"),
    Field("groups", list_of(string(pattern=_USER_RE, hint="expected a group name")), default=()),
)
_SERVICE = (
    Field(
        "name",
        string(pattern=_NAME_RE, hint="use lowercase letters, digits and '-'"),
        required=True,
    ),
    Field("exec", _argv, required=True),
    Field("user", string(), default="root"),
    Field("root_reason", string(nonempty=False), default=""),
    Field("environment", string_table(), default=()),
    Field("working_directory", abs_path(), default="/"),
    Field("setup", list_of(_argv), default=()),
    Field("creates", abs_path(), default=None),
)
_FILE = (
    Field("path", abs_path(), required=True),
    Field("template", _template_name, default=None),
    Field("content", string(nonempty=False), default=None),
    Field("mode", _octal_mode, default=0o644),
    Field("owner", string(), default="root"),
)
_TREE = (
    Field("path", abs_path(), required=True),
    Field("source", string(), required=True),
    Field("owner", string(), default="root"),
)
_DATA = (
    Field("paths", list_of(abs_path()), default=()),
    Field("owners", string_table(), default=()),
)
_NETWORK = (Field("ports", list_of(_PORT, item_type="int"), default=()),)
_TEST = (Field("settings", string_table(), default=()),)
_MONITORING = (Field("port", _PORT, default=9100),)
_PROBE = (
    Field("kind", _probe_kind, required=True),
    Field("port", _PORT, required=True),
    Field("name", string(nonempty=False), default=""),
    Field("path", string(), default="/"),
    Field("status", integer(100, 599), default=200),
    Field("contains", string(nonempty=False), default=""),
    Field("query", string(nonempty=False), default=""),
    Field("expect", string(nonempty=False), default=""),
    Field("timeout", number(), default=60.0),
    Field("phase", choice(ProbePhase, what="probe phase"), default=ProbePhase.EVERY),
    Field("params", string_table(), default=()),
)
_RECIPE = (
    Field("appliance", table(_APPLIANCE), required=True),
    Field("debian", table(_DEBIAN), default=None),
    Field("python", table(_PYTHON), default=None),
    Field("npm", table(_NPM), default=None),
    Field(
        "settings",
        map_of(
            _SETTING,
            key_pattern=_SETTING_NAME_RE,
            key_hint="setting names are letters, digits and '_' (usable as {{ settings.NAME }})",
        ),
        default={},
    ),
    Field("user", array_of_tables(_USER), default=()),
    Field("service", array_of_tables(_SERVICE), default=()),
    Field("file", array_of_tables(_FILE), default=()),
    Field("tree", array_of_tables(_TREE), default=()),
    Field("content", array_of_tables(_CONTENT), default=()),
    Field("data", table(_DATA), default=None),
    Field("network", table(_NETWORK), default=None),
    Field("backup", table(_BACKUP), default=None),
    Field("test", table(_TEST), default=None),
    Field("monitoring", table(_MONITORING), default=None),
    Field("probe", array_of_tables(_PROBE), default=()),
    Field("nixos", anything(), default=None),
)

# --------------------------------------------------------------------------- loading


def load_recipe(path_or_dir: Path) -> Recipe:
    """Load and validate recipes/NAME/recipe.toml (given the file or its directory).

    The recipe's `directory` and `source_file` are made absolute (not symlink-resolved).
    """
    path = Path(os.path.abspath(path_or_dir))
    file = path / RECIPE_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"no {RECIPE_FILE} here", file=file)
    src = TomlSource.from_file(file)
    return _build_recipe(src, file.parent)


def _build_recipe(src: TomlSource, directory: Path) -> Recipe:
    top = check_table(src, src.data, (), _RECIPE)
    app = top["appliance"]
    if app["name"] != directory.name:
        src.fail(
            ("appliance", "name"),
            f"{app['name']!r} must equal the recipe directory name {directory.name!r}",
        )
    backend = app["backend"]
    if backend == "debian" and top["debian"] is None:
        src.fail(("debian",), 'required section [debian] is missing (backend = "debian")')
    if backend == "nixos" and top["nixos"] is None:
        src.fail(("nixos",), 'required section [nixos] is missing (backend = "nixos")')
    if backend == "debian" and not top["service"]:
        src.fail(("service",), "a debian appliance needs at least one [[service]]")

    settings = tuple(_build_setting(src, name, s) for name, s in top["settings"].items())
    declared = {s.name for s in settings}
    for universal in UNIVERSAL_SETTINGS:
        if universal.name not in declared:
            default = app["name"] if universal.name == HOSTNAME_SETTING else None
            settings += (replace(universal, default=default),)
    users = _build_users(src, top["user"])
    known_users = {"root"} | {u.name for u in users}

    def check_user(path: KeyPath, name: str) -> None:
        if name not in known_users:
            src.fail(
                path,
                f"user {name!r} is neither root nor a declared [[user]]"
                f"{suggest(name, known_users)}",
            )

    services = []
    for i, s in enumerate(top["service"]):
        _check_unique(src, top["service"], i, "service", "name")
        check_user(("service", i, "user"), s["user"])
        services.append(Service(**s))

    files = []
    for i, f in enumerate(top["file"]):
        _check_unique(src, top["file"], i, "file", "path")
        if (f["template"] is None) == (f["content"] is None):
            src.fail(("file", i), "needs exactly one of 'template' or 'content'")
        if f["template"] is not None:
            _check_template(src, directory, ("file", i, "template"), f["template"])
        check_user(("file", i, "owner"), f["owner"])
        files.append(GeneratedFile(**f))

    trees = []
    for i, t in enumerate(top["tree"]):
        _check_unique(src, top["tree"], i, "tree", "path")
        check_user(("tree", i, "owner"), t["owner"])
        trees.append(TreeCopy(**t))

    probes = []
    for i, p in enumerate(top["probe"]):
        if p["kind"] in (ProbeKind.DNS, ProbeKind.DNS_TCP) and not p["query"]:
            src.fail(("probe", i, "query"), 'a dns probe needs query = "NAME TYPE"')
        if p["kind"] == ProbeKind.HTTP and not p["path"].startswith("/"):
            src.fail(("probe", i, "path"), f"must start with '/', got {p['path']!r}")
        probes.append(Probe(**p))
    _check_probe_templates(src, probes, settings)

    debian = DebianSection(**top["debian"]) if top["debian"] else DebianSection(packages=())
    python = None
    if top["python"] is not None:
        if backend != "debian":
            src.fail(("python",), "[python] needs the debian backend")
        python = PythonSection(**top["python"])
        if not python.sources and not python.bytecode:
            src.fail(("python", "sources"), "sources = false needs bytecode = true")
        lock = (directory / python.lock).resolve()
        if not lock.is_relative_to(directory.resolve()):
            src.fail(
                ("python", "lock"), f"lock file {python.lock!r} is outside the recipe directory"
            )
        if not lock.is_file():
            src.fail(
                ("python", "lock"),
                f"lock file {python.lock!r} does not exist; generate it with "
                f"`python -m appliancekit.sources.pypi lock {directory}`",
            )
    npm = None
    if top["npm"] is not None:
        if backend != "debian":
            src.fail(("npm",), "[npm] needs the debian backend")
        npm = NpmSection(**top["npm"])
        lock = (directory / npm.lock).resolve()
        if not lock.is_relative_to(directory.resolve()):
            src.fail(("npm", "lock"), f"lock file {npm.lock!r} is outside the recipe directory")
        if not lock.is_file():
            src.fail(
                ("npm", "lock"),
                f"lock file {npm.lock!r} does not exist; generate it with "
                f"`python -m appliancekit.sources.npm lock {directory}`",
            )
    recipe = Recipe(
        name=app["name"],
        summary=app["summary"],
        directory=directory,
        source_file=src.file,
        debian=debian,
        services=tuple(services),
        users=users,
        files=tuple(files),
        trees=tuple(trees),
        data_paths=top["data"]["paths"] if top["data"] else (),
        data_owners=top["data"]["owners"] if top["data"] else (),
        ports=top["network"]["ports"] if top["network"] else (),
        probes=tuple(probes),
        settings=settings,
        backend=backend,
        nixos=_build_nixos(src, top["nixos"]),
        python=python,
        content=build_content(
            src,
            top["content"],
            {s.name: (s.kind, s.per_device) for s in settings},
            [t.path for t in trees] + list(top["data"]["paths"] if top["data"] else ()),
        ),
        npm=npm,
    )
    if top["monitoring"] is not None:
        if backend != "debian":
            src.fail(("monitoring",), "[monitoring] needs the debian backend")
        from appliancekit.monitoring import augment  # it builds on this module's types

        try:
            recipe = augment(recipe, MonitoringSection(**top["monitoring"]))
        except UserError as exc:
            src.fail(("monitoring",), exc.message)
    if top["backup"] is not None:
        if backend != "debian":
            src.fail(("backup",), "[backup] needs the debian backend")
        section = build_section(src, top["backup"], recipe.data_paths)
        recipe = expand_backup(recipe, section, src)
    # after [backup]: its settings may have [test] values too
    return replace(recipe, test_settings=_build_test_settings(src, top["test"], recipe.settings))


def _check_unique(
    src: TomlSource, items: Sequence[Mapping[str, Any]], i: int, section: str, key: str
) -> None:
    for j in range(i):
        if items[j][key] == items[i][key]:
            src.fail(
                (section, i, key),
                f"duplicate {section} {key} {items[i][key]!r} (also {section}[{j}])",
            )


def _check_template(src: TomlSource, directory: Path, path: KeyPath, name: str) -> None:
    target = (directory / name).resolve()
    if not target.is_relative_to(directory.resolve()):
        src.fail(path, f"template {name!r} is outside the recipe directory")
    if not target.is_file():
        src.fail(path, f"template file {name!r} does not exist in {directory}")


def _build_users(src: TomlSource, raw: Sequence[dict[str, Any]]) -> tuple[User, ...]:
    users = []
    for i, u in enumerate(raw):
        if u["name"] == "root":
            src.fail(("user", i, "name"), "root is built in; do not declare it")
        _check_unique(src, raw, i, "user", "name")
        gid = u["gid"] if u["gid"] is not None else u["uid"]
        users.append(User(**{**u, "gid": gid}))
    return tuple(users)


def _build_setting(src: TomlSource, name: str, raw: dict[str, Any]) -> Setting:
    kind: SettingKind = raw["kind"]
    default = raw["default"]
    where = ("settings", name)
    universal = next((u for u in UNIVERSAL_SETTINGS if u.name == name), None)
    if universal is not None and (kind != universal.kind or not raw["per_device"]):
        src.fail(
            (*where, "kind"),
            f'every appliance has {name} (kind = "{universal.kind}", per_device = true):'
            " a recipe may only give it a default",
        )
    if raw["per_device"]:
        if not DEVICE_NAME_RE.fullmatch(name):
            src.fail(where, "a per-device setting's name must match [a-z][a-z0-9_]*")
        if kind == SettingKind.PATH:
            src.fail((*where, "kind"), "a path names a file on the build host: not per device")
    if default is not None:
        path = (*where, "default")
        if kind == SettingKind.INT:
            integer()(src, default, path)
        elif kind == SettingKind.BOOL:
            boolean()(src, default, path)
        else:
            string()(src, default, path)
        if kind != SettingKind.PATH:  # paths are checked when resolved (relative to the dir)
            try:
                convert(kind, default)
            except ValueError as exc:
                src.fail(path, f"{kind} setting: {exc}")
    return Setting(name=name, **raw)


def _check_probe_templates(
    src: TomlSource, probes: Sequence[Probe], settings: Sequence[Setting]
) -> None:
    """Probe fields are templates over the device's settings, rendered by the boot test:
    an undefined name is found here, with its recipe.toml line, not in the middle of a boot."""
    context: dict[str, object] = {
        "settings": {
            s.name: as_text(s.default) if s.default is not None else f"@@AK:{s.name}@@"
            for s in settings
        }
    }
    for i, probe in enumerate(probes):
        fields: list[tuple[KeyPath, str]] = [
            (("probe", i, k), getattr(probe, k))
            for k in ("name", "path", "contains", "query", "expect")
        ]
        fields += [(("probe", i, "params", k), v) for k, v in probe.params]
        for path, text in fields:
            render_string(
                text,
                context,
                file=src.file,
                field=format_path(path),
                first_line=src.value_line(path),
            )


def _build_test_settings(
    src: TomlSource, raw: dict[str, Any] | None, settings: Sequence[Setting]
) -> tuple[tuple[str, str], ...]:
    """[test] settings, checked as `flash -s` checks them."""
    if raw is None:
        return ()
    per_device = {s.name: s for s in settings if s.per_device}
    out = []
    for name, value in raw["settings"]:
        if name not in per_device:
            src.fail(
                ("test", "settings", name),
                f"{name!r} is not a per-device setting of this recipe"
                f" (per-device: {', '.join(sorted(per_device))})",
            )
        try:
            out.append((name, as_text(convert(per_device[name].kind, value))))
        except ValueError as exc:
            src.fail(("test", "settings", name), f"{per_device[name].kind} setting: {exc}")
    return tuple(out)


def _build_nixos(src: TomlSource, raw: Any) -> tuple[tuple[str, object], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        src.fail(("nixos",), f"expected a table, got {type_name(raw)}")
    flat: dict[str, object] = {}

    def walk(prefix: tuple[str, ...], value: dict[str, Any]) -> None:
        for key, sub in value.items():
            name = prefix + (key,)
            if isinstance(sub, dict):
                walk(name, sub)
                continue
            option = ".".join(name)
            if option in flat:
                src.fail(("nixos", *name), f"option {option!r} is set twice")
            flat[option] = freeze(sub)

    walk((), raw)
    return tuple(sorted(flat.items()))


# --------------------------------------------------------------------------- discovery


def list_recipes(recipes_dir: Path) -> list[str]:
    """Names of the recipes in `recipes_dir` (directories holding a recipe.toml), sorted."""
    recipes_dir = Path(recipes_dir)
    if not recipes_dir.is_dir():
        return []
    return sorted(p.name for p in recipes_dir.iterdir() if (p / RECIPE_FILE).is_file())


def find_recipe(name: str, recipes_dir: Path) -> Recipe:
    """Load recipes_dir/NAME/recipe.toml; an unknown name lists the known ones."""
    recipes_dir = Path(recipes_dir)
    known = list_recipes(recipes_dir)
    if name not in known:
        listing = f"known recipes: {', '.join(known)}" if known else "there are no recipes there"
        raise UserError(
            f"unknown recipe {name!r} in {recipes_dir}{did_you_mean(name, known)}; {listing}"
        )
    return load_recipe(recipes_dir / name)


# --------------------------------------------------------------------------- settings


def _setting_line(recipe: Recipe, name: str, key: str | None = None) -> int | None:
    try:
        src = TomlSource.from_file(recipe.source_file)
    except UserError:
        return None
    return src.line_of(("settings", name) + ((key,) if key else ()))


def resolve_settings(recipe: Recipe, overrides: Mapping[str, str]) -> ResolvedSettings:
    """Recipe defaults + command-line overrides -> typed values (sorted by name).

    Override paths are relative to the current directory, default paths to the recipe dir.
    """
    declared = {s.name: s for s in recipe.settings}
    for name in overrides:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise UserError(
                f"unknown setting {name!r}{did_you_mean(name, declared)}; "
                f"recipe {recipe.name!r} declares: {known}",
                file=recipe.source_file,
                field=f"settings.{name}",
            )
    values: dict[str, str | int | bool] = {}
    for s in recipe.settings:
        field_name = f"settings.{s.name}"
        if s.name in overrides:
            raw, base, origin = overrides[s.name], Path.cwd(), f"-s {s.name}"
        elif s.default is not None:
            raw, base, origin = s.default, recipe.directory, "default"
        elif s.per_device:
            values[s.name] = ""  # given per device at flash/publish time
            continue
        else:
            raise UserError(
                f"required setting {s.name} is not set (use -s {s.name}=VALUE)",
                file=recipe.source_file,
                line=_setting_line(recipe, s.name),
                field=field_name,
            )
        try:
            values[s.name] = convert(s.kind, raw, base)
        except ValueError as exc:
            key = "default" if origin == "default" else None
            raise UserError(
                f"{s.kind} setting ({origin}): {exc}",
                file=recipe.source_file,
                line=_setting_line(recipe, s.name, key),
                field=field_name + (".default" if key else ""),
            ) from None
    return ResolvedSettings(values=tuple(sorted(values.items())))
