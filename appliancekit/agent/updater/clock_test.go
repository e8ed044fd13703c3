package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func mtime(t *testing.T, path string) time.Time {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.ModTime()
}

func TestClockSaverWritesTheTimeAtMostOncePerInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".appliancekit", "clock")
	c := ClockSaver{Path: path, Every: 10 * time.Minute}
	start := time.Unix(1_800_000_000, 0)
	c.Save(start)
	if got := mtime(t, path); !got.Equal(start) {
		t.Fatalf("first save: %v, want %v", got, start)
	}
	c.Save(start.Add(5 * time.Minute)) // too soon: the card is spared a write
	if got := mtime(t, path); !got.Equal(start) {
		t.Fatalf("saved again after 5 minutes: %v", got)
	}
	c.Save(start.Add(11 * time.Minute))
	if got := mtime(t, path); !got.Equal(start.Add(11 * time.Minute)) {
		t.Fatalf("not saved after 11 minutes: %v", got)
	}
	// a clock set back (by hand, or a wrong source) is saved at once, not in 10 minutes
	c.Save(start.Add(time.Minute))
	if got := mtime(t, path); !got.Equal(start.Add(time.Minute)) {
		t.Fatalf("a clock set back was not saved: %v", got)
	}
	if info, _ := os.Stat(path); info.Size() != 0 {
		t.Fatalf("the clock file holds data: %d bytes", info.Size())
	}
}

func TestClockSaverRecordsBeforeARebootWhateverTheInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clock")
	c := &ClockSaver{Path: path, Every: time.Hour}
	start := time.Unix(1_800_000_000, 0)
	c.Save(start)
	c.Record(start.Add(20 * time.Second))
	if got := mtime(t, path); !got.Equal(start.Add(20 * time.Second)) {
		t.Fatalf("not recorded before the reboot: %v", got)
	}
	var none *ClockSaver // an Agent built without one (tests) saves nothing and does not panic
	none.Save(start)
	none.Record(start)
}

func TestClockSaverDoesNotCountAFailedSave(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := ClockSaver{Path: filepath.Join(blocker, "clock"), Every: time.Minute}
	c.Save(time.Unix(1_800_000_000, 0))
	if !c.failed || !c.last.IsZero() {
		t.Fatalf("a failed save counted: failed=%v last=%v", c.failed, c.last)
	}
}
