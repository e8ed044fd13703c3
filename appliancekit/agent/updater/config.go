package main

// What the image tells the agent (baked at build time) and what the device tells it
// (per-device settings, rendered by the initramfs into update.env).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Paths inside the sealed root and on /run and /data.
const (
	AgentJSON    = "/etc/appliancekit/agent.json"
	SlotsJSON    = "/etc/appliancekit/slots.json"
	BootSlotFile = "/run/appliancekit/boot-slot"
	RunDir       = "/run/appliancekit/update"
)

// Probe is a local health check taken from the recipe's probes (http and tcp kinds).
type Probe struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Port   int    `json:"port"`
	Path   string `json:"path"`
	Status int    `json:"status"`
}

// AgentConfig is /etc/appliancekit/agent.json (appliancekit/agent/install.py writes it).
type AgentConfig struct {
	Recipe          string   `json:"recipe"`
	Board           string   `json:"board"`
	Version         int64    `json:"version"`
	PublicKey       string   `json:"public_key"`
	Services        []string `json:"services"`
	ServiceDir      string   `json:"service_dir"`
	Health          []Probe  `json:"health"`
	CommitAfter     int      `json:"commit_after_seconds"`
	TrialTimeout    int      `json:"trial_timeout_seconds"`
	DataDir         string   `json:"data_dir"`
	StateDir        string   `json:"state_dir"`
	SavedClock      string   `json:"saved_clock"`
	SettingsFile    string   `json:"settings_file"`
	DeclaredPorts   []int    `json:"ports"`
	Minisign        string   `json:"minisign"`
	FsckFat         string   `json:"fsck_fat"`
	SvStat          string   `json:"s6_svstat"`
	SvCtl           string   `json:"s6_svc"`
	SnapshotPercent int      `json:"snapshot_budget_percent"`
}

// SlotsConfig is /etc/appliancekit/slots.json (boot/slotswitch.py).
type SlotsConfig struct {
	Format        int    `json:"format"`
	Board         string `json:"board"`
	Mechanism     string `json:"mechanism"`
	Implemented   bool   `json:"implemented"`
	RefuseReason  string `json:"refuse_reason"`
	Tries         int    `json:"tries"`
	State         string `json:"state"`
	Table         string `json:"table"`
	DevicePrefix  string `json:"device_prefix"`
	BootPartition struct {
		Name   string `json:"name"`
		Number int    `json:"number"`
	} `json:"boot_partition"`
	Slots map[string]struct {
		Partition string `json:"partition"`
		Number    int    `json:"number"`
		BootDir   string `json:"boot_dir"`
	} `json:"slots"`
	Watchdog *struct {
		Module         string `json:"module"`
		TimeoutSeconds int    `json:"timeout_seconds"`
		Device         string `json:"device"`
		ArmedBy        string `json:"armed_by"` // "initramfs" (or empty) or "agent"
	} `json:"watchdog"`
	Paths map[string]string `json:"paths"`
	// FsckFat is agent.json's fsck_fat, copied here by main: every read-write mount of a
	// FAT goes through this config, and agent.json is the one place tool paths are named.
	FsckFat string `json:"-"`
}

func loadJSON(path string, v interface{}) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	return nil
}

// Settings are the per-device update settings.
type Settings struct {
	URL            string
	Interval       int // seconds
	Window         Window
	AllowDowngrade bool
	StatusPort     int
}

// ParseSettings reads NAME=VALUE lines; unset values (rendered empty) take the defaults.
func ParseSettings(data []byte) (Settings, []string) {
	s := Settings{Interval: 3600, Window: Window{Always: true}}
	var problems []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || v == "" {
			continue
		}
		switch k {
		case "update_url":
			s.URL = strings.TrimRight(v, "/")
		case "update_interval":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				s.Interval = n
			} else {
				problems = append(problems, "update_interval is not a positive number of seconds")
			}
		case "update_window":
			if w, err := ParseWindow(v); err == nil {
				s.Window = w
			} else {
				problems = append(problems, err.Error())
			}
		case "update_allow_downgrade":
			s.AllowDowngrade = v == "true" || v == "1" || v == "yes"
		case "update_status_port":
			if n, err := strconv.Atoi(v); err == nil && n > 0 && n < 65536 {
				s.StatusPort = n
			}
		}
	}
	return s, problems
}

// BootInfo is what the initramfs wrote about this boot (/run/appliancekit/boot-slot).
type BootInfo struct {
	Slot     string
	Trial    bool
	FellBack string
	RootHash string
	// WatchdogArmed: the initramfs started the trial watchdog. Opening the device starts it,
	// so the agent feeds only one that was armed (a board's QEMU model may reset at once).
	// An initramfs older than the "watchdog=" line armed it in every trial: true when absent.
	WatchdogArmed bool
}

// ParseBootInfo reads "slot=a\ntrial=1\nfell_back=b\nroothash=...\nwatchdog=1".
func ParseBootInfo(data []byte) BootInfo {
	b := BootInfo{Slot: "a", WatchdogArmed: true}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "slot":
			if validSlot(v) {
				b.Slot = v
			}
		case "trial":
			b.Trial = v == "1"
		case "fell_back":
			if validSlot(v) {
				b.FellBack = v
			}
		case "roothash":
			b.RootHash = v
		case "watchdog":
			b.WatchdogArmed = v == "1"
		}
	}
	return b
}
