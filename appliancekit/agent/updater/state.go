package main

// Files the agent keeps, and the `initramfs` slot state it shares with the initramfs. Every
// write is a new file, fsync, rename, fsync of the directory: a crash leaves the old or the
// new file, never half of one.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// SlotState is the `initramfs` mechanism's state file (boot/templates/init.sh.j2 reads it).
type SlotState struct {
	Committed string // the slot known to work
	Trial     string // the slot to try next boot ("" none)
	Tries     int    // boots the trial has left
}

// ParseSlotState reads "committed=a\ntrial=b\ntries=1\n"; missing or bad values take the
// defaults the initramfs takes (committed a, no trial).
func ParseSlotState(data []byte) SlotState {
	s := SlotState{Committed: "a"}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "committed":
			if validSlot(v) {
				s.Committed = v
			}
		case "trial":
			if validSlot(v) {
				s.Trial = v
			}
		case "tries":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 9 {
				s.Tries = n
			}
		}
	}
	return s
}

// Format is what the initramfs parses: exactly one digit of tries.
func (s SlotState) Format() []byte {
	return []byte(fmt.Sprintf("committed=%s\ntrial=%s\ntries=%d\n", s.Committed, s.Trial, s.Tries))
}

func validSlot(s string) bool { return s == "a" || s == "b" }

// OtherSlot of a and b.
func OtherSlot(s string) string {
	if s == "a" {
		return "b"
	}
	return "a"
}

// WriteAtomic replaces path with data: new file, fsync, rename, fsync of the directory.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// WriteJSON writes v atomically as indented JSON.
func WriteJSON(path string, v interface{}) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteAtomic(path, append(data, '\n'), 0o644)
}

// ReadJSON fills v from path; a missing file leaves v as it is.
func ReadJSON(path string, v interface{}) error {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// SlotContent records which release a slot holds (written once its bytes are verified).
type SlotContent struct {
	Version  int64  `json:"version"`
	RootHash string `json:"root_hash"`
	Complete bool   `json:"complete"`
}

// Status is what the console and the status port show, kept across boots.
type Status struct {
	Slot          string          `json:"slot"`
	Version       int64           `json:"version"`
	RootHash      string          `json:"root_hash"`
	Trial         bool            `json:"trial"`
	LastCheck     string          `json:"last_check"`
	LastResult    string          `json:"last_result"`
	LastUpdate    string          `json:"last_update"`
	Failed        []FailedRelease `json:"failed"`
	Pending       *SlotContent    `json:"pending,omitempty"`
	LastDownload  int64           `json:"last_download_bytes"`
	LastFetchPlan int64           `json:"last_release_bytes"`
}
