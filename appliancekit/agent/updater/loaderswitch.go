package main

// Slot switching through the board's own loader: systemd-boot's boot counting
// (boot/sdboot.py), U-Boot's bootcount in a boot script (boot/ubootcount.py) and the
// Raspberry Pi firmware's tryboot (boot/tryboot.py). Each reads and writes the loader's own
// files on the boot partition, and reads from the same files whether this boot is a trial
// or a fallback: the initramfs does not choose on these boards, the loader does.

import (
	"bufio"
	"bytes"
	"debug/pe"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// BootFiles opens the boot partition (FAT) for a switch: its directory and how to close it.
// The agent mounts the partition; tests hand a directory.
type BootFiles func(rw bool) (dir string, done func() error, err error)

func mountedBoot(cfg SlotsConfig) BootFiles {
	return func(rw bool) (string, func() error, error) {
		m, err := MountBoot(cfg, rw)
		if err != nil {
			return "", nil, err
		}
		return m.Dir, m.Close, nil
	}
}

// LoaderBoot is implemented by switches whose loader chose the slot: what the loader's
// files say about this boot of `slot` (a trial of it, or a fallback from another slot).
type LoaderBoot interface {
	Booted(slot string) (trial bool, fellBack string)
}

// SlotBootPartitions is implemented by switches whose slots' boot files fill a FAT partition
// of their own rather than a directory on the boot partition (the Pi's autoboot.txt picks
// partitions): where a release's boot files go, and what a slot's copy must say.
type SlotBootPartitions interface {
	// SlotBoot opens slot's own boot partition.
	SlotBoot(slot string) BootFiles
	// SlotBootFile is a verified boot file as slot's loader must read it (data itself when
	// nothing changes): a release is built for slot a, so its cmdline.txt says ak.slot=a.
	SlotBootFile(name string, data []byte, slot string) []byte
}

// RebootArgument is implemented by switches whose trial needs a reboot argument.
type RebootArgument interface {
	RebootArgument() string
}

func withBoot(boot BootFiles, rw bool, fn func(dir string) error) error {
	dir, done, err := boot(rw)
	if err != nil {
		return err
	}
	ferr := fn(dir)
	if err := done(); ferr == nil {
		ferr = err
	}
	return ferr
}

// -- systemd-boot: entries with boot counters ----------------------------------------------

var sdEntryName = regexp.MustCompile(`^ak-slot-([ab])(?:\+([0-9]+)(?:-([0-9]+))?)?\.conf$`)

type sdEntry struct {
	Name    string
	Slot    string
	Counted bool // a boot counter in the name: armed, or tried and not committed
	Left    int
	Done    int
	Version int
}

func (e sdEntry) Bad() bool { return e.Counted && e.Left == 0 }

func parseSdEntryName(name string) (sdEntry, bool) {
	m := sdEntryName.FindStringSubmatch(name)
	if m == nil {
		return sdEntry{}, false
	}
	e := sdEntry{Name: name, Slot: m[1], Counted: m[2] != ""}
	e.Left, _ = strconv.Atoi(m[2])
	e.Done, _ = strconv.Atoi(m[3])
	return e, true
}

type sdbootSwitch struct {
	boot    BootFiles
	board   string
	entries string // loader/entries
	uki     string // the UKI's name in a slot's directory
	dirs    map[string]string
}

func (s *sdbootSwitch) list(dir string) []sdEntry {
	names, _ := os.ReadDir(filepath.Join(dir, s.entries))
	var out []sdEntry
	for _, n := range names {
		e, ok := parseSdEntryName(n.Name())
		if !ok {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(dir, s.entries, n.Name()))
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), " "); k == "version" {
				e.Version, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// UKICmdline is the .cmdline section of a unified kernel image.
func UKICmdline(path string) (string, error) {
	f, err := pe.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sec := f.Section(".cmdline")
	if sec == nil {
		return "", fmt.Errorf("%s has no .cmdline section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return "", err
	}
	if n := int(sec.VirtualSize); n > 0 && n < len(data) {
		data = data[:n]
	}
	return strings.TrimSpace(string(bytes.TrimRight(data, "\x00"))), nil
}

// SlotCmdline is cmdline naming slot in its ak.slot= word.
func SlotCmdline(cmdline, slot string) string {
	var words []string
	for _, w := range strings.Fields(cmdline) {
		if !strings.HasPrefix(w, "ak.slot=") {
			words = append(words, w)
		}
	}
	return strings.Join(append(words, "ak.slot="+slot), " ")
}

func (s *sdbootSwitch) Refuse() error { return nil }

// Arm: the slot's entry with one try (+1) and a version above every other entry's, so
// systemd-boot prefers it once; its options are the slot's UKI's command line naming it.
func (s *sdbootSwitch) Arm(slot string) error {
	return withBoot(s.boot, true, func(dir string) error {
		cmdline, err := UKICmdline(filepath.Join(dir, s.dirs[slot], s.uki))
		if err != nil {
			return err
		}
		version := 0
		for _, e := range s.list(dir) {
			if e.Version > version {
				version = e.Version
			}
			if e.Slot == slot {
				if err := os.Remove(filepath.Join(dir, s.entries, e.Name)); err != nil {
					return err
				}
			}
		}
		entry := fmt.Sprintf("title appliancekit %s (slot %s)\nsort-key appliancekit\nversion %d\nefi /%s/%s\noptions %s\n",
			s.board, slot, version+1, s.dirs[slot], s.uki, SlotCmdline(cmdline, slot))
		return WriteAtomic(filepath.Join(dir, s.entries, "ak-slot-"+slot+"+1.conf"), []byte(entry), 0o644)
	})
}

// Commit is systemd-bless-boot's rename: the counter leaves the name.
func (s *sdbootSwitch) Commit(slot string) error {
	return withBoot(s.boot, true, func(dir string) error {
		for _, e := range s.list(dir) {
			if e.Slot == slot && e.Counted {
				from := filepath.Join(dir, s.entries, e.Name)
				return os.Rename(from, filepath.Join(dir, s.entries, "ak-slot-"+slot+".conf"))
			}
		}
		return nil
	})
}

// Forget removes entries with no tries left (the loader already sorts them last).
func (s *sdbootSwitch) Forget() error {
	return withBoot(s.boot, true, func(dir string) error {
		for _, e := range s.list(dir) {
			if e.Bad() {
				if err := os.Remove(filepath.Join(dir, s.entries, e.Name)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (s *sdbootSwitch) Booted(slot string) (bool, string) {
	trial, fellBack := false, ""
	withBoot(s.boot, false, func(dir string) error {
		for _, e := range s.list(dir) {
			if e.Slot == slot && e.Counted {
				trial = true
			} else if e.Slot != slot && e.Bad() {
				fellBack = e.Slot
			}
		}
		return nil
	})
	return trial, fellBack
}

func (s *sdbootSwitch) State() string {
	var names []string
	withBoot(s.boot, false, func(dir string) error {
		for _, e := range s.list(dir) {
			names = append(names, e.Name)
		}
		return nil
	})
	return "systemd-boot entries: " + strings.Join(names, " ")
}

// -- U-Boot bootcount in a boot script --------------------------------------------------------

// BootCount is ak-bootcount.env, which boot.scr imports (U-Boot's `env import -t`).
type BootCount struct {
	Slot, AltSlot    string
	UpgradeAvailable bool
	Count, Limit     int
}

func ParseBootCount(data []byte) BootCount {
	b := BootCount{Slot: "a", AltSlot: "b", Limit: 1}
	text := strings.ReplaceAll(string(data), "\x00", "\n")
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		n, nerr := strconv.ParseInt(v, 16, 32) // setexpr writes hex
		switch k {
		case "slot":
			if validSlot(v) {
				b.Slot = v
			}
		case "altslot":
			if validSlot(v) {
				b.AltSlot = v
			}
		case "upgrade_available":
			b.UpgradeAvailable = v == "1"
		case "bootcount":
			if nerr == nil {
				b.Count = int(n)
			}
		case "bootlimit":
			if nerr == nil {
				b.Limit = int(n)
			}
		}
	}
	return b
}

func (b BootCount) Format() []byte {
	up := 0
	if b.UpgradeAvailable {
		up = 1
	}
	return []byte(fmt.Sprintf("slot=%s\naltslot=%s\nupgrade_available=%d\nbootcount=%x\nbootlimit=%x\n",
		b.Slot, b.AltSlot, up, b.Count, b.Limit))
}

type ubootSwitch struct {
	boot  BootFiles
	state string // ak-bootcount.env
	tries int
}

func (s *ubootSwitch) read() BootCount {
	var b BootCount
	withBoot(s.boot, false, func(dir string) error {
		data, _ := os.ReadFile(filepath.Join(dir, s.state))
		b = ParseBootCount(data)
		return nil
	})
	return b
}

func (s *ubootSwitch) write(b BootCount) error {
	return withBoot(s.boot, true, func(dir string) error {
		return WriteAtomic(filepath.Join(dir, s.state), b.Format(), 0o644)
	})
}

func (s *ubootSwitch) Refuse() error { return nil }

// Arm: slot=NEW altslot=OLD upgrade_available=1 bootcount=0; boot.scr counts every boot
// and runs altbootcmd once bootcount exceeds bootlimit.
func (s *ubootSwitch) Arm(slot string) error {
	limit := s.tries
	if limit < 1 {
		limit = 1
	}
	return s.write(BootCount{slot, OtherSlot(slot), true, 0, limit})
}

// Commit: upgrade_available=0 bootcount=0, what fw_setenv does with U-Boot's bootcount.
func (s *ubootSwitch) Commit(slot string) error {
	b := s.read()
	return s.write(BootCount{slot, OtherSlot(slot), false, 0, b.Limit})
}

// Forget: after altbootcmd booted the old slot, it is the slot again.
func (s *ubootSwitch) Forget() error {
	b := s.read()
	if !b.UpgradeAvailable {
		return nil
	}
	return s.write(BootCount{b.AltSlot, b.Slot, false, 0, b.Limit})
}

func (s *ubootSwitch) Booted(slot string) (bool, string) {
	b := s.read()
	if !b.UpgradeAvailable {
		return false, ""
	}
	if b.Slot == slot {
		return true, ""
	}
	return false, b.Slot
}

func (s *ubootSwitch) State() string {
	return "U-Boot bootcount: " + strings.ReplaceAll(strings.TrimSpace(string(s.read().Format())), "\n", " ")
}

// -- Raspberry Pi tryboot with autoboot.txt ---------------------------------------------------

// Autoboot is autoboot.txt: [all] boot_partition, and [tryboot] boot_partition (0: none).
type Autoboot struct{ Committed, Trial int }

func ParseAutoboot(data []byte) Autoboot {
	var a Autoboot
	section := "all"
	for _, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(strings.SplitN(raw, "#", 2)[0])
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.ToLower(strings.Trim(line, "[]"))
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) != "boot_partition" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			continue
		}
		switch section {
		case "all":
			a.Committed = n
		case "tryboot":
			a.Trial = n
		}
	}
	return a
}

func (a Autoboot) Format() []byte {
	text := fmt.Sprintf("# written by appliancekit; read by the Raspberry Pi bootloader (boot/tryboot.py)\n[all]\ntryboot_a_b=1\nboot_partition=%d\n", a.Committed)
	if a.Trial != 0 {
		text += fmt.Sprintf("[tryboot]\nboot_partition=%d\n", a.Trial)
	}
	return []byte(text)
}

type trybootSwitch struct {
	boot     BootFiles
	autoboot string
	numbers  map[string]int // slot -> its boot partition's number
	reboot   string         // "0 tryboot"
	cmdline  string         // cmdline.txt, in each slot's boot partition
	slotBoot func(slot string) BootFiles
}

func (s *trybootSwitch) read() Autoboot {
	var a Autoboot
	withBoot(s.boot, false, func(dir string) error {
		data, _ := os.ReadFile(filepath.Join(dir, s.autoboot))
		a = ParseAutoboot(data)
		return nil
	})
	return a
}

func (s *trybootSwitch) write(a Autoboot) error {
	return withBoot(s.boot, true, func(dir string) error {
		return WriteAtomic(filepath.Join(dir, s.autoboot), a.Format(), 0o644)
	})
}

func (s *trybootSwitch) slotOf(number int) string {
	for slot, n := range s.numbers {
		if n == number {
			return slot
		}
	}
	return ""
}

func (s *trybootSwitch) Refuse() error { return nil }

// Arm: [tryboot] names the slot's boot partition; the reboot must carry "0 tryboot".
func (s *trybootSwitch) Arm(slot string) error {
	a := s.read()
	a.Trial = s.numbers[slot]
	return s.write(a)
}

func (s *trybootSwitch) Commit(slot string) error {
	return s.write(Autoboot{Committed: s.numbers[slot]})
}

func (s *trybootSwitch) Forget() error {
	return s.write(Autoboot{Committed: s.read().Committed})
}

func (s *trybootSwitch) Booted(slot string) (bool, string) {
	a := s.read()
	n := s.numbers[slot]
	if a.Trial == 0 || a.Trial == a.Committed {
		return false, ""
	}
	if a.Trial == n {
		return true, ""
	}
	return false, s.slotOf(a.Trial)
}

func (s *trybootSwitch) RebootArgument() string { return s.reboot }

func (s *trybootSwitch) SlotBoot(slot string) BootFiles { return s.slotBoot(slot) }

// SlotBootFile: the slot's cmdline.txt names the slot (the initramfs mounts ak-root-SLOT);
// the firmware passes it to the kernel as it is, so the agent writes the slot into it.
func (s *trybootSwitch) SlotBootFile(name string, data []byte, slot string) []byte {
	if name != s.cmdline {
		return data
	}
	return []byte(SlotCmdline(string(data), slot) + "\n")
}

func (s *trybootSwitch) State() string {
	a := s.read()
	return fmt.Sprintf("tryboot: [all] boot_partition=%d, [tryboot] boot_partition=%d", a.Committed, a.Trial)
}

// newLoaderSwitch builds the switch of a loader mechanism from slots.json (nil: not one).
func newLoaderSwitch(cfg SlotsConfig, boot BootFiles) SlotSwitch {
	dirs := map[string]string{}
	for slot, info := range cfg.Slots {
		dirs[slot] = info.BootDir
	}
	switch cfg.Mechanism {
	case "systemd-boot":
		return &sdbootSwitch{boot: boot, board: cfg.Board, entries: cfg.Paths["entries"], uki: cfg.Paths["uki"], dirs: dirs}
	case "uboot-bootcount":
		return &ubootSwitch{boot: boot, state: cfg.Paths["state"], tries: cfg.Tries}
	case "rpi-tryboot":
		numbers := map[string]int{}
		for _, slot := range []string{"a", "b"} {
			numbers[slot], _ = strconv.Atoi(cfg.Paths["boot_partition_number_"+slot])
		}
		return &trybootSwitch{boot: boot, autoboot: cfg.Paths["autoboot"], numbers: numbers,
			reboot: cfg.Paths["reboot_argument"], cmdline: cfg.Paths["cmdline"],
			slotBoot: func(slot string) BootFiles { return mountedSlotBoot(cfg, slot, numbers[slot]) }}
	}
	return nil
}

// mountedSlotBoot mounts a slot's own boot partition (ak-boot-SLOT) at RunDir/boot-SLOT.
func mountedSlotBoot(cfg SlotsConfig, slot string, number int) BootFiles {
	return func(rw bool) (string, func() error, error) {
		m, err := MountPartition(cfg, cfg.Paths["boot_partition_"+slot], number, "boot-"+slot, rw)
		if err != nil {
			return "", nil, err
		}
		return m.Dir, m.Close, nil
	}
}

// rebootForTrial reboots, with the switch's reboot argument when it has one (the Pi's
// "0 tryboot": reboot(2) with LINUX_REBOOT_CMD_RESTART2, which the raspberrypi firmware
// driver passes to the firmware as the tryboot flag).
func rebootForTrial(sw SlotSwitch) {
	if r, ok := sw.(RebootArgument); ok && r.RebootArgument() != "" {
		syscall.Sync()
		arg, _ := syscall.BytePtrFromString(r.RebootArgument())
		_, _, errno := syscall.Syscall6(syscall.SYS_REBOOT, syscall.LINUX_REBOOT_MAGIC1,
			syscall.LINUX_REBOOT_MAGIC2, syscall.LINUX_REBOOT_CMD_RESTART2,
			uintptr(unsafe.Pointer(arg)), 0, 0)
		logf("reboot with %q failed: %v", r.RebootArgument(), errno)
	}
	reboot()
}
