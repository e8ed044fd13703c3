package main

// The slot switch: how a trial of the other slot is armed, how a boot commits, and what the
// loader does when a trial does not commit. One implementation per mechanism named by
// /etc/appliancekit/slots.json (boot/slotswitch.py); a mechanism without one refuses.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SlotSwitch is one board's mechanism.
type SlotSwitch interface {
	// Refuse says why this board cannot be updated (nil: it can).
	Refuse() error
	// Arm makes the next boot a trial of slot (one try).
	Arm(slot string) error
	// Commit makes slot the one the loader boots from now on.
	Commit(slot string) error
	// Forget drops a trial that did not commit (after the loader fell back).
	Forget() error
	// State describes the mechanism's state for the status.
	State() string
}

// NewSlotSwitch picks the implementation slots.json names.
func NewSlotSwitch(cfg SlotsConfig, dataDir string) SlotSwitch {
	if !cfg.Implemented {
		return refusing{cfg}
	}
	switch cfg.Mechanism {
	case "initramfs":
		path := strings.TrimPrefix(cfg.State, "data:")
		return &initramfsSwitch{path: filepath.Join(dataDir, path), tries: cfg.Tries}
	}
	if sw := newLoaderSwitch(cfg, mountedBoot(cfg)); sw != nil {
		return sw // the board's loader chooses (loaderswitch.go)
	}
	return refusing{cfg}
}

type refusing struct{ cfg SlotsConfig }

func (r refusing) err() error {
	if r.cfg.RefuseReason != "" {
		return errors.New(r.cfg.RefuseReason)
	}
	return fmt.Errorf("this agent has no implementation of slot switching through %q; updates are refused", r.cfg.Mechanism)
}
func (r refusing) Refuse() error       { return r.err() }
func (r refusing) Arm(string) error    { return r.err() }
func (r refusing) Commit(string) error { return r.err() }
func (r refusing) Forget() error       { return nil }
func (r refusing) State() string       { return r.cfg.Mechanism + " (not implemented)" }

// initramfsSwitch: the state file on the data partition that the initramfs reads; it takes
// a try off before booting the trial slot (boot/templates/init.sh.j2).
type initramfsSwitch struct {
	path  string
	tries int
}

func (s *initramfsSwitch) read() SlotState {
	data, err := os.ReadFile(s.path)
	if err != nil {
		return SlotState{Committed: "a"}
	}
	return ParseSlotState(data)
}

func (s *initramfsSwitch) Refuse() error { return nil }

func (s *initramfsSwitch) Arm(slot string) error {
	st := s.read()
	if st.Committed == slot {
		return fmt.Errorf("slot %s is the committed slot; refusing to try it", slot)
	}
	tries := s.tries
	if tries < 1 {
		tries = 1
	}
	st.Trial, st.Tries = slot, tries
	return WriteAtomic(s.path, st.Format(), 0o644)
}

func (s *initramfsSwitch) Commit(slot string) error {
	return WriteAtomic(s.path, SlotState{Committed: slot}.Format(), 0o644)
}

func (s *initramfsSwitch) Forget() error {
	st := s.read()
	return WriteAtomic(s.path, SlotState{Committed: st.Committed}.Format(), 0o644)
}

func (s *initramfsSwitch) State() string {
	st := s.read()
	if st.Trial == "" {
		return fmt.Sprintf("initramfs: committed %s", st.Committed)
	}
	return fmt.Sprintf("initramfs: committed %s, trial %s with %d tries left", st.Committed, st.Trial, st.Tries)
}
