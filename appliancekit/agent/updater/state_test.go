package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSlotStateRoundTripAndDefaults(t *testing.T) {
	s := SlotState{Committed: "b", Trial: "a", Tries: 1}
	if got := ParseSlotState(s.Format()); got != s {
		t.Fatalf("%+v", got)
	}
	if got := ParseSlotState([]byte("committed=x\ntrial=zz\ntries=42\n")); got != (SlotState{Committed: "a"}) {
		t.Fatalf("bad values must give the initramfs defaults: %+v", got)
	}
}

func TestInitramfsSwitchArmCommitForget(t *testing.T) {
	dir := t.TempDir()
	sw := &initramfsSwitch{path: filepath.Join(dir, "slots/state"), tries: 1}
	if err := sw.Arm("a"); err == nil {
		t.Fatal("armed the committed slot")
	}
	if err := sw.Arm("b"); err != nil {
		t.Fatal(err)
	}
	if st := sw.read(); st != (SlotState{"a", "b", 1}) {
		t.Fatalf("%+v", st)
	}
	// what the initramfs does before the trial boot: one try off
	os.WriteFile(sw.path, SlotState{"a", "b", 0}.Format(), 0o644)
	if err := sw.Forget(); err != nil {
		t.Fatal(err)
	}
	if st := sw.read(); st != (SlotState{Committed: "a"}) {
		t.Fatalf("%+v", st)
	}
	sw.Arm("b")
	sw.Commit("b")
	if st := sw.read(); st != (SlotState{Committed: "b"}) {
		t.Fatalf("%+v", st)
	}
	if _, err := os.Stat(sw.path + ".new"); !os.IsNotExist(err) {
		t.Fatal("left a .new file")
	}
}

func TestRefusingSwitchRefuses(t *testing.T) {
	sw := NewSlotSwitch(SlotsConfig{Mechanism: "uboot-bootcount", RefuseReason: "not implemented yet"}, "/data")
	if sw.Refuse() == nil || sw.Arm("b") == nil || sw.Commit("b") == nil {
		t.Fatal("an unimplemented mechanism must refuse")
	}
}

func TestWindow(t *testing.T) {
	w, err := ParseWindow("23:00-02:30")
	if err != nil {
		t.Fatal(err)
	}
	at := func(h, m int) time.Time { return time.Date(2026, 1, 1, h, m, 0, 0, time.UTC) }
	if !w.Contains(at(23, 30)) || !w.Contains(at(1, 0)) || w.Contains(at(2, 30)) || w.Contains(at(12, 0)) {
		t.Fatal("window across midnight")
	}
	if _, err := ParseWindow("25:00-01:00"); err == nil {
		t.Fatal("accepted 25:00")
	}
	if w, _ := ParseWindow(""); !w.Contains(at(12, 0)) {
		t.Fatal("no window means any time")
	}
}

func TestSettingsAndBootInfo(t *testing.T) {
	s, problems := ParseSettings([]byte("update_url=http://10.0.2.2:8080/deploy/\nupdate_interval=5\nupdate_window=\nupdate_allow_downgrade=true\nupdate_interval=x\n"))
	if s.URL != "http://10.0.2.2:8080/deploy" || s.Interval != 5 || !s.AllowDowngrade || !s.Window.Always || len(problems) != 1 {
		t.Fatalf("%+v %v", s, problems)
	}
	b := ParseBootInfo([]byte("slot=b\ntrial=1\nfell_back=\nroothash=abc\nwatchdog=0\n"))
	if b != (BootInfo{"b", true, "", "abc", false}) {
		t.Fatalf("%+v", b)
	}
	// the loader's initramfs on a direct board is never rewritten: one without the line
	// armed the watchdog in every trial, and the agent must go on feeding it
	if b := ParseBootInfo([]byte("slot=b\ntrial=1\n")); !b.WatchdogArmed {
		t.Fatalf("%+v", b)
	}
}

func TestSvstat(t *testing.T) {
	st, err := ParseSvstat("true 42 123\n")
	if err != nil || st != (ServiceState{Up: true, Secs: 42, Pid: 123}) {
		t.Fatal(st, err)
	}
	if st, err := ParseSvstat("false 3 -1\n"); err != nil || st.Up || st.Pid != -1 {
		t.Fatal(st, err)
	}
	if _, err := ParseSvstat("garbage"); err == nil {
		t.Fatal("accepted garbage")
	}
}

func TestCrashWatchCatchesALoopSeenUpAndDown(t *testing.T) {
	up := func(name string, pid, secs int) ServiceState { return ServiceState{name, true, secs, pid} }
	down := func(name string) ServiceState { return ServiceState{name, false, 0, -1} }
	// nginx crash-looping under s6 (up about a second, down a second), acme steady
	w := CrashWatch{Polls: 3}
	polls := [][]ServiceState{
		{up("acme", 10, 3), up("nginx", 20, 0)},
		{up("acme", 10, 5), up("nginx", 24, 0)},
		{up("acme", 10, 7), down("nginx")},
		{up("acme", 10, 9), up("nginx", 31, 1)},
	}
	var got []string
	for _, p := range polls {
		got = append(got, w.Observe(p))
	}
	if got[0] != "" || got[1] != "" || got[2] != "" || !strings.Contains(got[3], "service nginx was started again") {
		t.Fatalf("%q", got)
	}
	// a slow start: down once, then up under one process, is no crash
	w = CrashWatch{Polls: 3}
	for i, p := range [][]ServiceState{
		{down("nginx")}, {up("nginx", 7, 0)}, {up("nginx", 7, 2)}, {up("nginx", 7, 4)},
		{down("nginx")}, {up("nginx", 9, 1)}, {up("nginx", 9, 3)},
	} {
		if why := w.Observe(p); why != "" {
			t.Fatalf("poll %d: %s", i, why)
		}
	}
	// down three polls running
	w = CrashWatch{Polls: 3}
	w.Observe([]ServiceState{down("x")})
	w.Observe([]ServiceState{down("x")})
	if why := w.Observe([]ServiceState{down("x")}); !strings.Contains(why, "service x is down") {
		t.Fatal(why)
	}
}

func TestSnapshotRestoresData(t *testing.T) {
	data := t.TempDir()
	os.MkdirAll(filepath.Join(data, ".appliancekit/update"), 0o755)
	os.MkdirAll(filepath.Join(data, "db"), 0o755)
	os.WriteFile(filepath.Join(data, "db/schema"), []byte("v1"), 0o600)
	os.Symlink("db/schema", filepath.Join(data, "link"))
	snap := filepath.Join(data, ".appliancekit/update/snapshot")
	res, err := TakeSnapshot(data, snap, 50)
	if err != nil || res.Bytes != 2 {
		t.Fatal(res, err)
	}
	// the trial migrates the data
	os.WriteFile(filepath.Join(data, "db/schema"), []byte("v2-migrated"), 0o600)
	os.WriteFile(filepath.Join(data, "new-file"), []byte("x"), 0o600)
	restored, err := RestoreSnapshot(data, snap)
	if err != nil || !restored {
		t.Fatal(restored, err)
	}
	got, _ := os.ReadFile(filepath.Join(data, "db/schema"))
	if string(got) != "v1" {
		t.Fatalf("schema %q", got)
	}
	if _, err := os.Stat(filepath.Join(data, "new-file")); !os.IsNotExist(err) {
		t.Fatal("the trial's new file survived the rollback")
	}
	if l, _ := os.Readlink(filepath.Join(data, "link")); l != "db/schema" {
		t.Fatal("symlink lost")
	}
	if _, err := os.Stat(filepath.Join(data, ".appliancekit/update")); err != nil {
		t.Fatal("the agent's own state must stay")
	}
}

// A rollback's restore stops the services first (the backup agent, which starts the others,
// before them), moves /data back, and starts again only the services s6 meant to have up:
// none of them sees the trial's data after the restore, and none keeps it open.
func TestPutDataBackStopsTheServicesAroundTheRestore(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	state := filepath.Join(data, ".appliancekit/update")
	os.MkdirAll(state, 0o755)
	os.MkdirAll(filepath.Join(data, "db"), 0o755)
	os.WriteFile(filepath.Join(data, "db/schema"), []byte("v1"), 0o600)
	log := filepath.Join(dir, "calls")
	script := func(name, body string) string {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755)
		return path
	}
	// pdns is up; backup is up; "idle" was built down and nobody started it yet
	svstat := script("s6-svstat", `case "$3" in */idle) echo false;; *) echo true;; esac`)
	svc := script("s6-svc", `echo "$* $(cat `+filepath.Join(data, "db/schema")+`)" >> `+log)
	a := &Agent{cfg: AgentConfig{
		Services: []string{"pdns", "idle", "backup"}, ServiceDir: "/run/service",
		DataDir: data, StateDir: state, SvStat: svstat, SvCtl: svc,
	}}
	if restored, err := a.putDataBack(); restored || err != nil {
		t.Fatal("no snapshot: nothing to put back", restored, err)
	}
	if _, err := TakeSnapshot(data, a.snapshotDir(), 50); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(data, "db/schema"), []byte("v2-migrated"), 0o600)
	restored, err := a.putDataBack()
	if err != nil || !restored {
		t.Fatal(restored, err)
	}
	calls, _ := os.ReadFile(log)
	want := "-wD -T 20000 -d /run/service/backup v2-migrated\n" +
		"-wD -T 20000 -d /run/service/idle v2-migrated\n" +
		"-wD -T 20000 -d /run/service/pdns v2-migrated\n" +
		"-u /run/service/pdns v1\n" +
		"-u /run/service/backup v1\n"
	if string(calls) != want {
		t.Fatalf("s6-svc calls:\n%s\nwant:\n%s", calls, want)
	}
}
