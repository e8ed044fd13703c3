package main

import (
	"os"
	"path/filepath"
	"testing"
)

// fsck.fat's output in a sealed root (no iconv modules), after a power cut on the ESP.
const fsckAfterCut = `Cannot initialize conversion from codepage 850 to ANSI_X3.4-1968: Invalid argument
Cannot initialize conversion from ANSI_X3.4-1968 to codepage 850: Invalid argument
Using internal CP850 conversion table
fsck.fat 4.2 (2021-01-31)
Dirty bit is set. Fs was not properly unmounted and some data may be corrupt.
 Automatically removing dirty bit.
/dev/nvme0n1p1: 15 files, 24770/32695 clusters
`

func TestFsckReportKeepsWhatWasRepaired(t *testing.T) {
	got := fsckReport([]byte(fsckAfterCut))
	want := "Dirty bit is set. Fs was not properly unmounted and some data may be corrupt.; " +
		"Automatically removing dirty bit.; /dev/nvme0n1p1: 15 files, 24770/32695 clusters"
	if got != want {
		t.Fatalf("fsckReport:\n got %q\nwant %q", got, want)
	}
}

func TestDropSalvagedRemovesOnlyRecoveredChains(t *testing.T) {
	dir := t.TempDir()
	salvaged := []string{"FSCK0000.REC", "fsck0001.rec"}
	kept := []string{"VMLINUZ", "initrd.img", "fsck.txt", "REC.FSCK", "ak-bootcount.env"}
	for _, name := range append(append([]string{}, salvaged...), kept...) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dropSalvaged(dir)
	for _, name := range salvaged {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s is still there (err %v)", name, err)
		}
	}
	for _, name := range kept {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s was removed: %v", name, err)
		}
	}
}
