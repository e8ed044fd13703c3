package main

// Partitions and the boot partition, found the way the initramfs finds them: by GPT name
// (PARTNAME in sysfs), on MBR boards by number under the board's device prefix.

import (
	"bufio"
	"fmt"
	"os"
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
	}
	if err := syscall.Mount(dev, dir, "vfat", flags, "flush"); err != nil {
		return nil, fmt.Errorf("mount %s: %v", dev, err)
	}
	return &BootMount{Dev: dev, Dir: dir, rw: rw}, nil
}

// Close syncs and unmounts.
func (b *BootMount) Close() error {
	syscall.Sync()
	return syscall.Unmount(b.Dir, 0)
}
