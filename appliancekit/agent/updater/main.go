// ak-update: the update agent of an appliancekit appliance (docs/architecture.md, "Updates").
// It runs as root under s6 (it writes partitions, arms the trial boot and reboots); it has
// no shell and runs nothing but minisign, fsck.fat, s6-svstat and s6-svc.
package main

import (
	"os"
	"os/exec"
	"time"
)

func runCmd(name string, args ...string) error { return exec.Command(name, args...).Run() }

func main() {
	var cfg AgentConfig
	var slots SlotsConfig
	if err := loadJSON(AgentJSON, &cfg); err != nil {
		fail(err)
	}
	if err := loadJSON(SlotsJSON, &slots); err != nil {
		fail(err)
	}
	slots.FsckFat = cfg.FsckFat
	if err := os.MkdirAll(RunDir, 0o700); err != nil {
		fail(err)
	}
	data, _ := os.ReadFile(cfg.SettingsFile)
	settings, problems := ParseSettings(data)
	for _, p := range problems {
		logf("settings: %s", p)
	}
	bootData, _ := os.ReadFile(BootSlotFile)
	a := &Agent{cfg: cfg, slots: slots, boot: ParseBootInfo(bootData), settings: settings}
	a.sw = NewSlotSwitch(slots, cfg.DataDir)
	// first thing, before a trial that may end in a reboot: this boot's time is saved
	a.clock = &ClockSaver{Path: cfg.SavedClock, Every: ClockSaveEvery}
	a.clock.Save(time.Now())
	if lb, ok := a.sw.(LoaderBoot); ok {
		// the loader chose: its own files say whether this boot is a trial or a fallback
		a.boot.Trial, a.boot.FellBack = lb.Booted(a.boot.Slot)
	}
	ReadJSON(a.statusPath(), &a.status)
	a.status.Slot, a.status.Version, a.status.RootHash = a.boot.Slot, cfg.Version, a.boot.RootHash
	a.status.Trial = a.boot.Trial
	a.show()
	a.AfterBoot()
	if settings.StatusPort > 0 {
		go a.ServeStatus(settings.StatusPort)
	}
	for {
		a.clock.Save(time.Now())
		a.Check()
		time.Sleep(time.Duration(settings.Interval) * time.Second)
	}
}

func fail(err error) {
	logf("cannot start: %v", err)
	// s6 would restart a process that exits every second; wait instead
	for {
		time.Sleep(time.Hour)
	}
}
