package main

// The clock kept on /data. A board without an RTC (the Pi 4) starts every boot in 1970; the
// initramfs moves it to the release's build time and, if later, to the time saved here, so
// after a power cut the clock resumes where this board last saw it instead of going back to
// the build time (weeks or months behind for a long-running appliance). The file's
// modification time is the saved time, as with systemd-timesyncd's clock file; touching it
// writes one inode, not data.

import (
	"os"
	"path/filepath"
	"time"
)

// ClockSaveEvery bounds how far behind a power cut leaves the saved time, and how often the
// SD card's inode is written.
const ClockSaveEvery = 10 * time.Minute

// ClockSaver writes the time into a file's modification time, at most once per Every.
type ClockSaver struct {
	Path   string
	Every  time.Duration
	last   time.Time
	failed bool
}

// Save records now unless it did less than Every ago.
func (c *ClockSaver) Save(now time.Time) {
	if c != nil && !c.last.IsZero() && now.Sub(c.last) < c.Every && now.After(c.last) {
		return
	}
	c.Record(now)
}

// Record records now whenever it was last saved: before a reboot, so that a trial boot
// that failed within minutes of a newer release's build time does not send the next boot
// back to an older one. It reports a failure once, not on every poll.
func (c *ClockSaver) Record(now time.Time) {
	if c == nil || c.Path == "" { // no saver, or an agent.json from before the saved clock
		return
	}
	err := touch(c.Path, now)
	if err != nil && !c.failed {
		logf("cannot save the clock on /data: %v", err)
	}
	c.failed = err != nil
	if err == nil {
		c.last = now
	}
}

func touch(path string, at time.Time) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chtimes(path, at, at)
}
