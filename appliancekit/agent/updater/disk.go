package main

// Partitions and the boot partition, found the way the initramfs finds them: by GPT name
// (PARTNAME in sysfs), on MBR boards by number under the board's device prefix.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// FindPartition returns /dev/NAME of the partition called name (GPT) or numbered number.
func FindPartition(cfg SlotsConfig, name string, number int) (string, error) {
	uevents, _ := filepath.Glob("/sys/class/block/*/uevent")
	for _, path := range uevents {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var dev, part string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "DEVNAME=") {
				dev = line[8:]
			} else if strings.HasPrefix(line, "PARTNAME=") {
				part = line[9:]
			}
		}
		f.Close()
		if part == name && dev != "" {
			return "/dev/" + dev, nil
		}
	}
	if cfg.DevicePrefix != "" && number > 0 {
		matches, _ := filepath.Glob(cfg.DevicePrefix + strconv.Itoa(number))
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.Mode()&os.ModeDevice != 0 {
				return m, nil
			}
		}
	}
	return "", fmt.Errorf("partition %s (number %d) not found", name, number)
}

// BootMount is the boot partition (FAT), mounted under /run for the agent's own use.
type BootMount struct {
	Dev string
	Dir string
	rw  bool
}

// MountBoot mounts the boot partition read-only (or read-write) at RunDir/boot.
func MountBoot(cfg SlotsConfig, rw bool) (*BootMount, error) {
	return MountPartition(cfg, cfg.BootPartition.Name, cfg.BootPartition.Number, "boot", rw)
}

// MountPartition mounts the FAT partition called name (GPT) or numbered number at
// RunDir/under: the boot partition, or a slot's own boot partition on the Pi.
func MountPartition(cfg SlotsConfig, name string, number int, under string, rw bool) (*BootMount, error) {
	dev, err := FindPartition(cfg, name, number)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(RunDir, under)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC)
	if !rw {
		flags |= syscall.MS_RDONLY
	} else {
		repairFat(cfg.FsckFat, dev)
	}
	if err := syscall.Mount(dev, dir, "vfat", flags, "flush"); err != nil {
		return nil, fmt.Errorf("mount %s: %v", dev, err)
	}
	if rw {
		dropSalvaged(dir)
	}
	return &BootMount{Dev: dev, Dir: dir, rw: rw}, nil
}

// repairFat checks an unmounted FAT before it is written. A power cut while the agent (or
// U-Boot) wrote it leaves the dirty bit set and clusters that a half-written file had
// taken allocated to no file: on a 64 MiB ESP that is room for one boot file fewer, and
// the next write of it fails with ENOSPC for good. fsck.fat -a frees nothing itself: it
// salvages such chains into FSCKnnnn.REC files, which dropSalvaged removes.
func repairFat(fsckFat, dev string) {
	if fsckFat == "" {
		logf("%s: not checked before writing: agent.json names no fsck_fat", dev)
		return
	}
	if isMounted(dev) {
		return // checking a mounted FAT would race its writer
	}
	out, err := exec.Command(fsckFat, "-a", "-w", dev).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() == 1: // errors found and repaired
		logf("%s was not cleanly unmounted (a power cut?): fsck.fat repaired it: %s", dev, fsckReport(out))
	default:
		logf("fsck.fat %s: %v: %s", dev, err, fsckReport(out))
	}
}

// fsckReport is fsck.fat's output on one console line, less its banner and its notes
// about code pages (the sealed root has no iconv modules; it uses its own CP850 table).
func fsckReport(out []byte) string {
	var kept []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "",
			strings.HasPrefix(line, "fsck.fat "),
			strings.HasPrefix(line, "Cannot initialize conversion"),
			strings.HasPrefix(line, "Using internal CP850"):
			continue
		}
		kept = append(kept, line)
	}
	return strings.Join(kept, "; ")
}

// dropSalvaged removes the chains fsck.fat salvaged into the FAT's root. Every file on a
// boot partition is written whole and renamed into place (NAME.new, then NAME), so a chain
// no file owned was always the unfinished copy of a file that is still there, or rewritten.
func dropSalvaged(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, entry := range entries {
		if !isSalvaged(entry.Name()) {
			continue
		}
		path := filepath.Join(dir, entry.Name())
		if st, err := os.Stat(path); err == nil && os.Remove(path) == nil {
			logf("removed %s: %d bytes of a file cut short", entry.Name(), st.Size())
		}
	}
}

// isSalvaged: fsck.fat names a salvaged chain FSCKnnnn.REC; vfat may show that short name
// in either case.
func isSalvaged(name string) bool {
	upper := strings.ToUpper(name)
	return strings.HasPrefix(upper, "FSCK") && strings.HasSuffix(upper, ".REC")
}

func isMounted(dev string) bool {
	data, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) > 0 && fields[0] == dev {
			return true
		}
	}
	return false
}

// Close syncs and unmounts.
func (b *BootMount) Close() error {
	syscall.Sync()
	return syscall.Unmount(b.Dir, 0)
}
