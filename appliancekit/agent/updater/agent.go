package main

// The update agent's life: after a boot, settle a trial (commit it or fail it) or a
// fallback (record the failed release, put /data back); then poll the deploy repository
// every interval, write a newer signed release into the other slot, and switch to it.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Agent holds one boot's state.
type Agent struct {
	cfg      AgentConfig
	slots    SlotsConfig
	sw       SlotSwitch
	boot     BootInfo
	settings Settings
	clock    *ClockSaver
	mu       sync.Mutex
	status   Status
	shown    string
}

func logf(format string, args ...interface{}) {
	fmt.Printf("ak-update: "+format+"\n", args...)
}

func (a *Agent) statusPath() string       { return filepath.Join(a.cfg.StateDir, "status.json") }
func (a *Agent) snapshotDir() string      { return filepath.Join(a.cfg.StateDir, "snapshot") }
func (a *Agent) slotFile(s string) string { return filepath.Join(a.cfg.StateDir, "slot-"+s+".json") }

func (a *Agent) save() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := WriteJSON(a.statusPath(), a.status); err != nil {
		logf("cannot save the status: %v", err)
	}
}

// StatusLine is what the console shows.
func (a *Agent) StatusLine() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.status
	failed := "none"
	if len(s.Failed) > 0 {
		var parts []string
		for _, f := range s.Failed {
			parts = append(parts, fmt.Sprintf("%d (%s)", f.Version, short(f.RootHash)))
		}
		failed = strings.Join(parts, ", ")
	}
	trial := ""
	if s.Trial {
		trial = " (trial)"
	}
	return fmt.Sprintf("status: slot %s%s, release %d (root %s), last check %s: %s; failed releases: %s",
		s.Slot, trial, s.Version, short(s.RootHash), orNever(s.LastCheck), orNone(s.LastResult), failed)
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
func orNever(s string) string {
	if s == "" {
		return "never"
	}
	return s
}
func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *Agent) show() {
	line := a.StatusLine()
	if line != a.shown {
		logf("%s", line)
		a.shown = line
	}
}

func (a *Agent) recordFailed(c SlotContent, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, f := range a.status.Failed {
		if f.RootHash == c.RootHash {
			return
		}
	}
	a.status.Failed = append(a.status.Failed, FailedRelease{
		Version: c.Version, RootHash: c.RootHash, Reason: reason,
		At: time.Now().UTC().Format(time.RFC3339),
	})
}

func (a *Agent) setResult(result string) {
	a.mu.Lock()
	a.status.LastCheck = time.Now().UTC().Format(time.RFC3339)
	a.status.LastResult = result
	a.mu.Unlock()
	a.save()
	a.show()
}

// AfterBoot settles what the previous boot left: a fallback or a trial.
func (a *Agent) AfterBoot() {
	if a.boot.FellBack != "" {
		var c SlotContent
		ReadJSON(a.slotFile(a.boot.FellBack), &c)
		a.recordFailed(c, "its trial boot did not commit (crash, hang, panic or failed health check)")
		restored, err := a.putDataBack()
		if err != nil {
			logf("could not put /data back from before the trial: %v", err)
		}
		if err := a.sw.Forget(); err != nil {
			logf("could not clear the trial: %v", err)
		}
		msg := fmt.Sprintf("release %d in slot %s did not commit: back on slot %s", c.Version, a.boot.FellBack, a.boot.Slot)
		if restored {
			msg += ", /data restored from before the trial"
		}
		a.mu.Lock()
		a.status.Pending = nil
		a.mu.Unlock()
		logf("%s", msg)
		a.setResult("rolled back: " + msg)
		return
	}
	if a.boot.Trial {
		a.trial()
		return
	}
	// a committed boot: a snapshot left from an earlier trial is not needed any more
	os.RemoveAll(a.snapshotDir())
}

// putDataBack moves /data back from the snapshot taken before the trial. s6 starts this
// boot's services beside the agent (or the backup agent starts them), so they may already
// be running on the trial's data, and a service that has its database open would keep
// serving the moved-away copy: they are stopped first, and the ones s6 meant to have up are
// started again on the data as it was.
func (a *Agent) putDataBack() (bool, error) {
	if _, err := os.Stat(a.snapshotDir()); err != nil {
		return false, nil
	}
	wanted := WantedUp(a.cfg)
	logf("putting /data back from before the trial: stopping the services (%s up)", orNone(strings.Join(wanted, ", ")))
	StopServices(a.cfg)
	start := time.Now()
	restored, err := RestoreSnapshot(a.cfg.DataDir, a.snapshotDir())
	if restored {
		logf("/data put back from before the trial in %.2f s (renames)", time.Since(start).Seconds())
	}
	for _, name := range wanted {
		runCmd(a.cfg.SvCtl, "-u", filepath.Join(a.cfg.ServiceDir, name))
	}
	return restored, err
}

func (a *Agent) trial() {
	var wd *Watchdog
	if w := a.slots.Watchdog; w != nil {
		if w.ArmedBy == "agent" {
			// opening starts it; a feed every timeout/8 leaves a slow guest most of it
			every := time.Duration(w.TimeoutSeconds) * time.Second / 8
			if wd = OpenWatchdog(w.Device, every); wd != nil {
				logf("trial watchdog %s started (%d s), fed every %s until the trial commits", w.Device, w.TimeoutSeconds, every)
			}
		} else if a.boot.WatchdogArmed {
			wd = OpenWatchdog(w.Device, 5*time.Second)
		}
	}
	logf("trial boot of release %d in slot %s: committing once every service has been up %d s and the health checks pass",
		a.cfg.Version, a.boot.Slot, a.cfg.CommitAfter)
	a.setResult(fmt.Sprintf("trial of release %d running", a.cfg.Version))
	deadline := time.Now().Add(time.Duration(a.cfg.TrialTimeout) * time.Second)
	why := ""
	crashes := CrashWatch{Polls: 3}
	for time.Now().Before(deadline) {
		states, err := ServiceStates(a.cfg)
		ok, reason := false, ""
		if err != nil {
			reason = err.Error()
		} else {
			if crash := crashes.Observe(states); crash != "" {
				why = crash
				break
			}
			ok, reason = AllUp(states, a.cfg.CommitAfter)
		}
		if ok {
			ok, reason = Healthy(a.cfg.Health)
		}
		if ok {
			if err := a.sw.Commit(a.boot.Slot); err != nil {
				why = "cannot commit: " + err.Error()
				break
			}
			wd.Disarm()
			os.RemoveAll(a.snapshotDir())
			a.mu.Lock()
			a.status.Trial = false
			a.status.Pending = nil
			a.status.LastUpdate = time.Now().UTC().Format(time.RFC3339)
			a.mu.Unlock()
			a.setResult(fmt.Sprintf("committed release %d in slot %s", a.cfg.Version, a.boot.Slot))
			return
		}
		why = reason
		time.Sleep(2 * time.Second)
	}
	a.recordFailed(SlotContent{Version: a.cfg.Version, RootHash: a.boot.RootHash}, "trial did not become healthy: "+why)
	a.setResult(fmt.Sprintf("trial of release %d failed (%s): rebooting into slot %s", a.cfg.Version, why, OtherSlot(a.boot.Slot)))
	wd.Abandon()
	a.clock.Record(time.Now())
	reboot()
}

func reboot() {
	syscall.Sync()
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART); err != nil {
		logf("reboot failed: %v", err)
	}
	select {}
}

// Check polls the repository once and acts on what it finds.
func (a *Agent) Check() {
	result, err := a.checkOnce()
	if err != nil {
		result = err.Error()
	}
	a.setResult(result)
}

var errUnreachable = errors.New("repository unreachable")

func (a *Agent) checkOnce() (string, error) {
	if a.settings.URL == "" {
		return "no update_url set: not checking", nil
	}
	if err := a.sw.Refuse(); err != nil {
		return "", fmt.Errorf("refused: %v", err)
	}
	f := NewFetcher(a.settings.URL + "/" + a.cfg.Recipe + "/" + a.cfg.Board)
	sums, err := f.Get("SHA256SUMS", 1<<20)
	if errors.Is(err, ErrNotFound) {
		return "no release published", nil
	}
	if err != nil {
		return "", fmt.Errorf("%w: %v (keeping release %d)", errUnreachable, err, a.cfg.Version)
	}
	rel, err := a.readRelease(f, sums)
	if err != nil {
		if strings.HasPrefix(err.Error(), "refused: ") && changedWhileRead(f, sums) {
			// SHA256SUMS, its signature and update.json came from two releases: a publish
			// fell between two requests. A forgery would leave SHA256SUMS as it was.
			return "the release changed while it was read (a publish under way): checking again at the next poll", nil
		}
		return "", err
	}
	a.mu.Lock()
	failed := append([]FailedRelease(nil), a.status.Failed...)
	a.mu.Unlock()
	running := Running{a.cfg.Recipe, a.cfg.Board, a.cfg.Version, a.boot.RootHash}
	d := Decide(running, rel, failed, a.settings.AllowDowngrade)
	if d.Refuse != "" {
		return "", fmt.Errorf("refused: %s", d.Refuse)
	}
	if !d.Take {
		return d.Note, nil
	}
	target := OtherSlot(a.boot.Slot)
	var staged SlotContent
	ReadJSON(a.slotFile(target), &staged)
	if !(staged.Complete && staged.RootHash == rel.RootHash) {
		logf("release %d found: writing it to slot %s", rel.Version, target)
		start := time.Now()
		if err := a.writeRelease(f, rel, target); err != nil {
			return "", fmt.Errorf("release %d not written (will resume): %v", rel.Version, err)
		}
		logf("release %d written to slot %s and verified (%d bytes downloaded, %.1f s)", rel.Version, target, f.Downloaded, time.Since(start).Seconds())
	}
	a.mu.Lock()
	a.status.LastDownload = f.Downloaded
	a.status.Pending = &SlotContent{rel.Version, rel.RootHash, true}
	a.mu.Unlock()
	if !a.settings.Window.Contains(time.Now()) {
		return fmt.Sprintf("release %d is in slot %s; switching in the maintenance window", rel.Version, target), nil
	}
	return a.switchTo(rel, target)
}

// readRelease verifies the signature over sums, then update.json against it.
func (a *Agent) readRelease(f *Fetcher, sums []byte) (Release, error) {
	sig, err := f.Get("SHA256SUMS.minisig", 64<<10)
	if errors.Is(err, ErrNotFound) {
		return Release{}, fmt.Errorf("refused: the release is not signed (no SHA256SUMS.minisig)")
	}
	if err != nil {
		return Release{}, fmt.Errorf("%w: %v", errUnreachable, err)
	}
	if err := VerifySums(a.cfg.Minisign, a.cfg.PublicKey, sums, sig); err != nil {
		return Release{}, fmt.Errorf("refused: %v", err)
	}
	table, err := ParseSums(sums)
	if err != nil {
		return Release{}, fmt.Errorf("refused: %v", err)
	}
	want, ok := table[UpdateFile]
	if !ok {
		return Release{}, fmt.Errorf("refused: the signed release lists no %s (publish it with a two-slot appliancekit)", UpdateFile)
	}
	doc, err := f.Get(UpdateFile, 1<<20)
	if err != nil {
		return Release{}, fmt.Errorf("%w: %v", errUnreachable, err)
	}
	if sum := sha256.Sum256(doc); hex.EncodeToString(sum[:]) != want {
		return Release{}, fmt.Errorf("refused: %s does not match the signed SHA256SUMS", UpdateFile)
	}
	rel, err := ParseRelease(doc)
	if err != nil {
		return Release{}, fmt.Errorf("refused: %v", err)
	}
	return rel, nil
}

// changedWhileRead reads SHA256SUMS again: different bytes mean a publish fell between this
// check's requests (publish swaps the release directory whole, so each file is one release's).
func changedWhileRead(f *Fetcher, first []byte) bool {
	again, err := f.Get("SHA256SUMS", 1<<20)
	return err == nil && !bytes.Equal(again, first)
}

func (a *Agent) writeRelease(f *Fetcher, rel Release, target string) error {
	if a.slots.Mechanism == "initramfs" {
		if err := a.checkLoader(rel); err != nil {
			return err
		}
	}
	if err := WriteJSON(a.slotFile(target), SlotContent{rel.Version, rel.RootHash, false}); err != nil {
		return err
	}
	tinfo, rinfo := a.slots.Slots[target], a.slots.Slots[a.boot.Slot]
	tdev, err := FindPartition(a.slots, tinfo.Partition, tinfo.Number)
	if err != nil {
		return err
	}
	rdev, err := FindPartition(a.slots, rinfo.Partition, rinfo.Number)
	if err != nil {
		return err
	}
	tf, err := os.OpenFile(tdev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer tf.Close()
	rf, err := os.Open(rdev)
	if err != nil {
		return err
	}
	defer rf.Close()
	size, err := tf.Seek(0, 2)
	if err != nil {
		return err
	}
	if _, err := WriteArtefact(f, rel, rel.Root, tf, rf, size, nil); err != nil {
		return err
	}
	if err := a.writeBootFiles(f, rel, target); err != nil {
		return err
	}
	return WriteJSON(a.slotFile(target), SlotContent{rel.Version, rel.RootHash, true})
}

// writeBootFiles puts the release's boot files where the loader reads target's: its
// directory on the boot partition, or its own boot partition (SlotBootPartitions).
func (a *Agent) writeBootFiles(f *Fetcher, rel Release, target string) error {
	running := a.boot.Slot
	if sp, ok := a.sw.(SlotBootPartitions); ok {
		fix := func(name string, data []byte) []byte { return sp.SlotBootFile(name, data, target) }
		return withBoot(sp.SlotBoot(target), true, func(dir string) error {
			return withBoot(sp.SlotBoot(running), false, func(runningDir string) error {
				return WriteSlotBootFiles(f, rel, dir, runningDir, fix)
			})
		})
	}
	tinfo, rinfo := a.slots.Slots[target], a.slots.Slots[running]
	return withBoot(mountedBoot(a.slots), true, func(dir string) error {
		return WriteSlotBootFiles(f, rel, filepath.Join(dir, tinfo.BootDir), filepath.Join(dir, rinfo.BootDir), nil)
	})
}

// checkLoader: on the `initramfs` mechanism the loader always starts its own kernel and
// initramfs; a release that needs others would need kexec, which this agent does not do.
func (a *Agent) checkLoader(rel Release) error {
	bm, err := MountBoot(a.slots, false)
	if err != nil {
		return err
	}
	defer bm.Close()
	for _, key := range []string{"loader_kernel", "loader_initrd"} {
		name := a.slots.Paths[key]
		for _, b := range rel.Boot {
			if b.Name == name && !sameFile(filepath.Join(bm.Dir, name), b) {
				return fmt.Errorf("refused: the release's %s differs from the loader's; switching kernels on this board needs kexec, which is not implemented", name)
			}
		}
	}
	return nil
}

func (a *Agent) switchTo(rel Release, target string) (string, error) {
	logf("switching to release %d: stopping services, keeping /data for a rollback", rel.Version)
	StopServices(a.cfg)
	snap, err := TakeSnapshot(a.cfg.DataDir, a.snapshotDir(), a.cfg.SnapshotPercent)
	if err != nil {
		a.startServices()
		return "", fmt.Errorf("refused: %v", err)
	}
	logf("/data kept for a rollback: %d bytes in %.2f s (/data: %d bytes used, %d free; budget %d%% of free)",
		snap.Bytes, snap.Seconds, snap.Used, snap.Free, snap.BudgetPercent)
	if err := a.sw.Arm(target); err != nil {
		a.startServices()
		return "", fmt.Errorf("cannot arm the trial: %v", err)
	}
	a.setResult(fmt.Sprintf("rebooting into slot %s for one trial boot of release %d", target, rel.Version))
	a.clock.Record(time.Now())
	rebootForTrial(a.sw)
	return "", nil
}

func (a *Agent) startServices() {
	for _, name := range a.cfg.Services {
		runCmd(a.cfg.SvCtl, "-u", filepath.Join(a.cfg.ServiceDir, name))
	}
}

// ServeStatus answers GET / with the status as JSON, on a port the recipe declares.
func (a *Agent) ServeStatus(port int) {
	declared := false
	for _, p := range a.cfg.DeclaredPorts {
		declared = declared || p == port
	}
	if !declared {
		logf("update_status_port %d is not one of the recipe's ports: no status over the network", port)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		data, _ := json.MarshalIndent(a.status, "", "  ")
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(append(data, '\n'))
	})
	logf("status on port %d", port)
	if err := http.ListenAndServe(fmt.Sprintf(":%d", port), mux); err != nil {
		logf("status port %d: %v", port, err)
	}
}
