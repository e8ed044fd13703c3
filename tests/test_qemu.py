"""appliancekit.qemu: the command line (pure), and real QEMU runs.

The slow tests boot an x86_64 kernel under TCG with a busybox initramfs generated here: the
host's kernel from /boot if there is one, else Debian's cloud kernel fetched once with
appliancekit's isolated apt into its cache.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from appliancekit.cache import Cache, default_cache_dir
from appliancekit.probes import forward_map, wait_for_probes
from appliancekit.qemu import (
    BootError,
    Drive,
    Machine,
    PortForward,
    QemuConfig,
    build_command,
    free_port,
    retry,
)
from appliancekit.recipe import Probe, ProbeKind
from appliancekit.sources.debian import AptSource, select_kernel_packages
from appliancekit.sources.unpack import unpack

QEMU_X86 = "qemu-system-x86_64"
MARKER = "APPLIANCEKIT-TEST-READY"


def config(**overrides: object) -> QemuConfig:
    return QemuConfig(**{"binary": QEMU_X86, "machine": "q35", **overrides})  # type: ignore[arg-type]


def cmd(cfg: QemuConfig, interactive: bool = False) -> list[str]:
    return build_command(
        cfg,
        qmp_socket=Path("/w/qmp.sock"),
        serial_log=Path("/w/serial.log"),
        interactive=interactive,
    )


def after(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag`, in order."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


# -- build_command -----------------------------------------------------------------------------


def test_command_minimal_shape() -> None:
    argv = cmd(config(kernel=Path("/k/vmlinuz"), initrd=Path("/k/initrd"), append="console=ttyS0"))
    assert argv == [
        QEMU_X86,
        "-machine", "q35",
        "-m", "512M",
        "-smp", "1",
        "-nodefaults", "-nographic", "-no-reboot",
        "-qmp", "unix:/w/qmp.sock,server=on,wait=off",
        "-chardev", "file,id=serial0,path=/w/serial.log",
        "-serial", "chardev:serial0",
        "-kernel", "/k/vmlinuz",
        "-initrd", "/k/initrd",
        "-append", "console=ttyS0",
    ]  # fmt: skip


def test_command_cpu_dtb_firmware_extra_args_last() -> None:
    argv = cmd(
        config(
            binary="qemu-system-aarch64",
            machine="virt",
            cpu="cortex-a72",
            smp=2,
            dtb=Path("/b/board.dtb"),
            firmware=Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"),
            extra_args=("-device", "virtio-rng-pci"),
        )
    )
    assert after(argv, "-cpu") == ["cortex-a72"]
    assert after(argv, "-smp") == ["2"]
    assert after(argv, "-dtb") == ["/b/board.dtb"]
    assert after(argv, "-bios") == ["/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"]
    assert argv[-2:] == ["-device", "virtio-rng-pci"]
    assert "-kernel" not in argv and "-append" not in argv


def test_command_drives() -> None:
    argv = cmd(
        config(
            drives=(
                Drive(Path("/i/disk.img")),
                Drive(Path("/i/nvme.img"), device="nvme", snapshot=False),
                Drive(Path("/i/sd.img"), device="sd"),
                Drive(Path("/i/q.qcow2"), device="virtio-blk-device", format="qcow2"),
            )
        )
    )
    assert after(argv, "-drive") == [
        "file=/i/disk.img,format=raw,snapshot=on,if=none,id=drive0",
        "file=/i/nvme.img,format=raw,if=none,id=drive1",
        "file=/i/sd.img,format=raw,snapshot=on,if=sd",
        "file=/i/q.qcow2,format=qcow2,snapshot=on,if=none,id=drive3",
    ]
    assert after(argv, "-device") == [
        "virtio-blk-pci,drive=drive0",
        "nvme,drive=drive1,serial=drive1",
        "virtio-blk-device,drive=drive3",
    ]


def test_command_escapes_commas_in_paths() -> None:
    argv = build_command(
        config(drives=(Drive(Path("/a,b/disk.img")),)),
        qmp_socket=Path("/s,1/qmp.sock"),
        serial_log=Path("/l,og/serial.log"),
    )
    assert after(argv, "-drive")[0].startswith("file=/a,,b/disk.img,")
    assert after(argv, "-qmp") == ["unix:/s,,1/qmp.sock,server=on,wait=off"]
    assert after(argv, "-chardev") == ["file,id=serial0,path=/l,,og/serial.log"]


def test_command_network_and_forwards_bind_localhost() -> None:
    argv = cmd(
        config(
            net_device="virtio-net-pci",
            forwards=(PortForward(80, 8080), PortForward(53, 5353, "udp")),
        )
    )
    assert after(argv, "-netdev") == [
        "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:5353-:53"
    ]
    assert after(argv, "-device") == ["virtio-net-pci,netdev=net0"]


def test_command_onboard_nic() -> None:
    argv = cmd(config(net_device="nic:allwinner-emac", forwards=(PortForward(22, 2222),)))
    assert after(argv, "-nic") == ["user,model=allwinner-emac,hostfwd=tcp:127.0.0.1:2222-:22"]
    assert "-netdev" not in argv


def test_command_no_network_means_no_nic() -> None:
    argv = cmd(config())
    assert "-netdev" not in argv and "-nic" not in argv
    assert "-nodefaults" in argv  # otherwise QEMU would add its default NIC
    with pytest.raises(ValueError, match="network device"):
        cmd(config(forwards=(PortForward(80, 8080),)))
    with pytest.raises(ValueError, match="tcp or udp"):
        cmd(config(net_device="e1000", forwards=(PortForward(80, 8080, "sctp"),)))


def test_command_interactive_serial_on_stdio() -> None:
    argv = cmd(config(), interactive=True)
    assert after(argv, "-serial") == ["mon:stdio"]
    assert "-chardev" not in argv
    assert "-nographic" in argv


def test_from_spec() -> None:
    from appliancekit.board import QemuSpec

    spec = QemuSpec(binary="qemu-system-aarch64", machine="virt", cpu="max", extra_args=("-x",))
    cfg = QemuConfig.from_spec(spec, kernel=Path("/k"), forwards=(PortForward(80, 1),))
    assert (cfg.binary, cfg.machine, cfg.cpu, cfg.memory, cfg.net_device) == (
        "qemu-system-aarch64",
        "virt",
        "max",
        "512M",
        "virtio-net-pci",
    )
    assert cfg.kernel == Path("/k") and cfg.extra_args == ("-x",) and cfg.firmware is None


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# -- retry -------------------------------------------------------------------------------------


def test_retry_returns_first_success_and_reraises_last_error() -> None:
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionRefusedError("not yet")
        return "up"

    assert retry(flaky, timeout=5, interval=0.01) == "up"
    assert len(calls) == 3

    def never() -> None:
        raise ConnectionRefusedError("still down")

    start = time.monotonic()
    with pytest.raises(ConnectionRefusedError, match="still down"):
        retry(never, timeout=0.3, interval=0.05)
    assert 0.2 < time.monotonic() - start < 2


# -- real QEMU without a guest -----------------------------------------------------------------

needs_qemu = pytest.mark.skipif(shutil.which(QEMU_X86) is None, reason=f"{QEMU_X86} not installed")


@needs_qemu
def test_machine_lifecycle_without_guest(tmp_path: Path) -> None:
    """-M none: QEMU starts, answers QMP, ignores the power button, is killed cleanly."""
    # A deep workdir: the QMP socket must fall back to a short path (sun_path limit).
    workdir = tmp_path / ("d" * 60) / ("e" * 60)
    with Machine(config(machine="none", memory="16M"), workdir) as m:
        m.start()
        assert m.is_running()
        status = m.qmp("query-status")
        assert isinstance(status, dict) and "status" in status
        version = m.qmp("query-version")
        assert isinstance(version, dict) and version["qemu"]["major"] >= 7
        with pytest.raises(BootError, match="timed out") as err:
            m.wait_for_serial("never printed", timeout=0.3)
        assert err.value.serial_tail == ""
        assert m.powerdown(timeout=0.5) is False  # nothing in there to obey it
        assert not m.is_running()
    assert not m.is_running()


@needs_qemu
def test_machine_killed_on_exception(tmp_path: Path) -> None:
    m = Machine(config(machine="none", memory="16M"), tmp_path)
    with pytest.raises(KeyboardInterrupt), m:
        m.start()
        raise KeyboardInterrupt
    assert not m.is_running()
    assert m.returncode is not None


@needs_qemu
def test_machine_start_failure_is_boot_error(tmp_path: Path) -> None:
    with Machine(config(machine="no-such-board"), tmp_path) as m, pytest.raises(BootError) as err:
        m.start()
    assert "unsupported machine type" in str(err.value)


@needs_qemu
def test_retry_aborts_when_machine_died(tmp_path: Path) -> None:
    with Machine(config(machine="none", memory="16M"), tmp_path) as m:
        m.start()
        m.qmp("quit")
        start = time.monotonic()

        def never() -> None:
            raise ConnectionRefusedError

        with pytest.raises(BootError, match="QEMU exited"):
            retry(never, timeout=30, interval=0.05, machine=m)
        assert time.monotonic() - start < 10


# -- real boots (slow) -------------------------------------------------------------------------


def _cloud_kernel() -> Path:
    """Debian's cloud amd64 kernel through appliancekit's own isolated apt (no host state)."""
    cache = Cache(default_cache_dir())
    apt = AptSource(cache, "trixie", "amd64")
    apt.update()
    kernels = select_kernel_packages(apt.resolve(["linux-image-cloud-amd64"]))
    unpacked = [unpack(cache, fetched) for fetched in apt.fetch(kernels)]
    return next(u.root for u in unpacked if (u.root / "boot").is_dir())


@pytest.fixture(scope="session")
def x86_kernel() -> tuple[Path, Path | None]:
    """(vmlinuz, modules dir or None): the host's kernel if /boot has one, else Debian's."""
    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        moddir = Path("/lib/modules") / vmlinuz.name.removeprefix("vmlinuz-")
        if os.access(vmlinuz, os.R_OK):
            return vmlinuz, moddir if moddir.is_dir() else None
    root = _cloud_kernel()
    (vmlinuz,) = root.glob("boot/vmlinuz-*")
    (moddir,) = root.glob("usr/lib/modules/*")
    return vmlinuz, moddir


def _module_files(moddir: Path | None, wanted: list[str]) -> list[tuple[str, bytes]]:
    """(name, uncompressed .ko) for `wanted` and their dependencies, dependencies first.

    Modules that are not found are taken to be built in.
    """
    from io import BytesIO

    from elftools.elf.elffile import ELFFile

    if moddir is None:
        return []
    index: dict[str, Path] = {}
    for path in moddir.rglob("*.ko*"):
        index[path.name.split(".ko")[0].replace("-", "_")] = path

    def load(path: Path) -> bytes:
        data = path.read_bytes()
        if path.name.endswith(".xz"):
            return lzma.decompress(data)
        if path.name.endswith(".gz"):
            return gzip.decompress(data)
        if path.name.endswith(".zst"):
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        return data

    ordered: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen or name not in index:
            return
        seen.add(name)
        data = load(index[name])
        modinfo = ELFFile(BytesIO(data)).get_section_by_name(".modinfo").data()
        for entry in modinfo.split(b"\0"):
            if entry.startswith(b"depends="):
                for dep in filter(None, entry[8:].decode().split(",")):
                    visit(dep)
        ordered.append((name, data))

    for name in wanted:
        visit(name)
    return ordered


INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m.ko; done
n=0; while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
acpid -f -c /etc/acpi -l /dev/console &
httpd -p 80 -h /www
echo "{marker}"
while true; do sleep 3600; done
"""

PANIC_INIT = """#!/bin/busybox sh
echo "init: giving up on purpose"
exit 3
"""


def _make_initramfs(out: Path, init: str, modules: list[tuple[str, bytes]] = ()) -> Path:
    """A reproducible gzip'd newc cpio: busybox, /init, modules, a web root."""
    root = out.with_suffix(".d")
    for d in ("bin", "proc", "sys", "dev", "modules", "www", "etc/acpi/PWRF"):
        (root / d).mkdir(parents=True, exist_ok=True)
    busybox = Path("/bin/busybox")
    shutil.copy2(busybox, root / "bin/busybox")
    (root / "init").write_text(init)
    (root / "init").chmod(0o755)
    for name, data in modules:
        (root / "modules" / f"{name}.ko").write_bytes(data)
    (root / "modules/order").write_text("".join(f"{name}\n" for name, _ in modules))
    (root / "www/index.html").write_text(f"<h1>{MARKER} web</h1>\n")
    power = root / "etc/acpi/PWRF/00000080"
    power.write_text("#!/bin/sh\necho 'acpid: power button'\npoweroff -f\n")
    power.chmod(0o755)
    entries = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    subprocess.run(["touch", "-h", "-d", "@0", *entries, "."], cwd=root, check=True)
    cpio = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--reproducible", "-R", "0:0", "--quiet"],
        cwd=root,
        input="".join(f"{e}\n" for e in entries).encode(),
        capture_output=True,
        check=True,
    ).stdout
    out.write_bytes(subprocess.run(["gzip", "-9n"], input=cpio, capture_output=True).stdout)
    return out


def _boot_config(kernel: Path, initrd: Path, forwards: tuple[PortForward, ...] = ()) -> QemuConfig:
    return config(
        kernel=kernel,
        initrd=initrd,
        append="console=ttyS0 loglevel=6 panic=-1",
        net_device="virtio-net-pci,romfile=",
        forwards=forwards,
    )


needs_boot_tools = pytest.mark.skipif(
    not (shutil.which(QEMU_X86) and Path("/bin/busybox").exists() and shutil.which("cpio")),
    reason=f"needs {QEMU_X86}, busybox-static and cpio",
)


@pytest.mark.slow
@needs_boot_tools
def test_boot_busybox_httpd_probe_and_powerdown(
    tmp_path: Path, x86_kernel: tuple[Path, Path | None]
) -> None:
    vmlinuz, moddir = x86_kernel
    modules = _module_files(moddir, ["virtio_pci", "virtio_net", "button", "evdev"])
    initrd = _make_initramfs(tmp_path / "initrd.img", INIT.format(marker=MARKER), modules)
    forwards = (PortForward(80, free_port()),)
    with Machine(_boot_config(vmlinuz, initrd, forwards), tmp_path / "vm") as m:
        m.start()
        kernel_at = m.wait_for_serial(re.compile(r"Linux version \d+\.\d+"), timeout=30)
        ready_at = m.wait_for_serial(MARKER, timeout=60)
        probe = Probe(kind=ProbeKind.HTTP, port=80, contains=f"{MARKER} web", timeout=30)
        (result,) = wait_for_probes([probe], forward_map(forwards), 30, m)
        probed_at = time.monotonic() - m.started_at
        assert result.ok, f"{result.detail}\n{m.tail()}"
        clean = m.powerdown(timeout=15)
        off_at = time.monotonic() - m.started_at
        print(
            f"\nkernel banner {kernel_at:.2f}s, marker {ready_at:.2f}s "
            f"(kernel->marker {ready_at - kernel_at:.2f}s), HTTP 200 {probed_at:.2f}s "
            f"after {result.attempts} attempt(s), powered off {off_at:.2f}s (clean={clean})"
        )
        assert clean, m.tail()
        assert "acpid: power button" in m.serial_text()
        assert "\x1b" in m.serial_text() and "\x1b" not in m.tail(500)  # SeaBIOS escapes
    assert not m.is_running()


@pytest.mark.slow
@needs_boot_tools
def test_boot_panic_is_boot_error_with_panic_text(
    tmp_path: Path, x86_kernel: tuple[Path, Path | None]
) -> None:
    vmlinuz, _ = x86_kernel
    initrd = _make_initramfs(tmp_path / "initrd.img", PANIC_INIT)
    with Machine(_boot_config(vmlinuz, initrd), tmp_path / "vm") as m:
        m.start()
        with pytest.raises(BootError) as err:
            m.wait_for_serial(MARKER, timeout=60)
    assert "QEMU exited" in err.value.message
    assert "Kernel panic - not syncing" in err.value.serial_tail
    assert "Attempted to kill init" in err.value.serial_tail
    assert "Kernel panic" in str(err.value)
