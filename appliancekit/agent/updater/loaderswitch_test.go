package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

func dirBoot(dir string) BootFiles {
	return func(bool) (string, func() error, error) { return dir, func() error { return nil }, nil }
}

func names(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// tinyUKI: a PE32+ image with a .cmdline section (what debug/pe needs to find it).
func tinyUKI(cmdline string) []byte {
	var b bytes.Buffer
	dos := make([]byte, 0x40)
	copy(dos, "MZ")
	binary.LittleEndian.PutUint32(dos[0x3c:], 0x40)
	b.Write(dos)
	b.WriteString("PE\x00\x00")
	binary.Write(&b, binary.LittleEndian, pe32coff{Machine: 0x8664, NumberOfSections: 1, SizeOfOptionalHeader: 240, Characteristics: 0x0206})
	opt := make([]byte, 240)
	binary.LittleEndian.PutUint16(opt[0:], 0x20b)
	binary.LittleEndian.PutUint32(opt[32:], 0x1000) // SectionAlignment
	binary.LittleEndian.PutUint32(opt[36:], 0x200)  // FileAlignment
	binary.LittleEndian.PutUint32(opt[56:], 0x2000) // SizeOfImage
	binary.LittleEndian.PutUint32(opt[60:], 0x200)  // SizeOfHeaders
	binary.LittleEndian.PutUint16(opt[68:], 10)     // EFI application
	binary.LittleEndian.PutUint32(opt[108:], 16)    // NumberOfRvaAndSizes
	b.Write(opt)
	var sec [40]byte
	copy(sec[:], ".cmdline")
	binary.LittleEndian.PutUint32(sec[8:], uint32(len(cmdline)))
	binary.LittleEndian.PutUint32(sec[12:], 0x1000)
	binary.LittleEndian.PutUint32(sec[16:], 0x200)
	binary.LittleEndian.PutUint32(sec[20:], 0x200)
	binary.LittleEndian.PutUint32(sec[36:], 0x40000040)
	b.Write(sec[:])
	out := append(b.Bytes(), make([]byte, 0x200-b.Len())...)
	data := make([]byte, 0x200)
	copy(data, cmdline)
	return append(out, data...)
}

type pe32coff struct {
	Machine              uint16
	NumberOfSections     uint16
	TimeDateStamp        uint32
	PointerToSymbolTable uint32
	NumberOfSymbols      uint32
	SizeOfOptionalHeader uint16
	Characteristics      uint16
}

func TestSystemdBootArmTrialFallbackCommit(t *testing.T) {
	dir := t.TempDir()
	entries := filepath.Join(dir, "loader/entries")
	os.MkdirAll(entries, 0o755)
	os.MkdirAll(filepath.Join(dir, "slot-b"), 0o755)
	os.WriteFile(filepath.Join(entries, "ak-slot-a.conf"), []byte("title x\nsort-key appliancekit\nversion 3\n"), 0o644)
	os.WriteFile(filepath.Join(entries, "ak-slot-b+0-1.conf"), []byte("version 2\n"), 0o644) // an old failed trial
	os.WriteFile(filepath.Join(dir, "slot-b/appliance.efi"), tinyUKI("console=ttyS0 ak.roothash=ab ak.slot=a"), 0o644)
	cfg := SlotsConfig{Mechanism: "systemd-boot", Implemented: true, Board: "ec2-x86_64",
		Paths: map[string]string{"entries": "loader/entries", "uki": "appliance.efi"}}
	cfg.Slots = map[string]struct {
		Partition string `json:"partition"`
		Number    int    `json:"number"`
		BootDir   string `json:"boot_dir"`
	}{"a": {BootDir: "slot-a"}, "b": {BootDir: "slot-b"}}
	sw := newLoaderSwitch(cfg, dirBoot(dir)).(*sdbootSwitch)

	if trial, fell := sw.Booted("a"); trial || fell != "b" {
		t.Fatalf("a boot of a beside b's entry with no tries left is a fallback from b: %v %q", trial, fell)
	}
	if err := sw.Arm("b"); err != nil {
		t.Fatal(err)
	}
	if got := names(t, entries); !reflect.DeepEqual(got, []string{"ak-slot-a.conf", "ak-slot-b+1.conf"}) {
		t.Fatalf("%v", got)
	}
	entry, _ := os.ReadFile(filepath.Join(entries, "ak-slot-b+1.conf"))
	want := "title appliancekit ec2-x86_64 (slot b)\nsort-key appliancekit\nversion 4\nefi /slot-b/appliance.efi\noptions console=ttyS0 ak.roothash=ab ak.slot=b\n"
	if string(entry) != want {
		t.Fatalf("entry:\n%s\nwant:\n%s", entry, want)
	}
	// what systemd-boot does before it starts the entry
	os.Rename(filepath.Join(entries, "ak-slot-b+1.conf"), filepath.Join(entries, "ak-slot-b+0-1.conf"))
	if trial, fell := sw.Booted("b"); !trial || fell != "" {
		t.Fatalf("b's boot with its counter is the trial: %v %q", trial, fell)
	}
	if trial, fell := sw.Booted("a"); trial || fell != "b" {
		t.Fatalf("a's boot after b's try is a fallback: %v %q", trial, fell)
	}
	if err := sw.Commit("b"); err != nil {
		t.Fatal(err)
	}
	if got := names(t, entries); !reflect.DeepEqual(got, []string{"ak-slot-a.conf", "ak-slot-b.conf"}) {
		t.Fatalf("%v", got)
	}
	if trial, fell := sw.Booted("b"); trial || fell != "" {
		t.Fatalf("committed: %v %q", trial, fell)
	}
	os.Rename(filepath.Join(entries, "ak-slot-b.conf"), filepath.Join(entries, "ak-slot-b+0-1.conf"))
	if err := sw.Forget(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, entries); !reflect.DeepEqual(got, []string{"ak-slot-a.conf"}) {
		t.Fatalf("%v", got)
	}
}

func TestUbootBootCount(t *testing.T) {
	exported := []byte("altslot=a\nbootcount=2\nbootlimit=1\nslot=b\nupgrade_available=1\n\x00")
	if got := ParseBootCount(exported); got != (BootCount{"b", "a", true, 2, 1}) {
		t.Fatalf("%+v", got)
	}
	dir := t.TempDir()
	cfg := SlotsConfig{Mechanism: "uboot-bootcount", Implemented: true, Tries: 1, Paths: map[string]string{"state": "ak-bootcount.env"}}
	sw := newLoaderSwitch(cfg, dirBoot(dir)).(*ubootSwitch)
	if trial, fell := sw.Booted("a"); trial || fell != "" {
		t.Fatal("no state file: a plain boot of a")
	}
	sw.Arm("b")
	data, _ := os.ReadFile(filepath.Join(dir, "ak-bootcount.env"))
	if string(data) != "slot=b\naltslot=a\nupgrade_available=1\nbootcount=0\nbootlimit=1\n" {
		t.Fatalf("%q", data)
	}
	os.WriteFile(filepath.Join(dir, "ak-bootcount.env"), []byte("slot=b\naltslot=a\nupgrade_available=1\nbootcount=1\nbootlimit=1\n"), 0o644)
	if trial, fell := sw.Booted("b"); !trial || fell != "" {
		t.Fatal("the trial")
	}
	if trial, fell := sw.Booted("a"); trial || fell != "b" {
		t.Fatal("altbootcmd's boot is a fallback from b")
	}
	sw.Forget()
	if got := sw.read(); got != (BootCount{"a", "b", false, 0, 1}) {
		t.Fatalf("%+v", got)
	}
	sw.Arm("b")
	sw.Commit("b")
	if got := sw.read(); got != (BootCount{"b", "a", false, 0, 1}) {
		t.Fatalf("%+v", got)
	}
}

func TestTryboot(t *testing.T) {
	dir := t.TempDir()
	cfg := SlotsConfig{Mechanism: "rpi-tryboot", Implemented: true, Paths: map[string]string{
		"autoboot": "autoboot.txt", "boot_partition_number_a": "2", "boot_partition_number_b": "3",
		"reboot_argument": "0 tryboot"}}
	sw := newLoaderSwitch(cfg, dirBoot(dir)).(*trybootSwitch)
	os.WriteFile(filepath.Join(dir, "autoboot.txt"), Autoboot{Committed: 2}.Format(), 0o644)
	sw.Arm("b")
	if got := ParseAutoboot(mustRead(t, filepath.Join(dir, "autoboot.txt"))); got != (Autoboot{2, 3}) {
		t.Fatalf("%+v", got)
	}
	if trial, fell := sw.Booted("b"); !trial || fell != "" {
		t.Fatal("booted b while [tryboot] names it: the trial")
	}
	if trial, fell := sw.Booted("a"); trial || fell != "b" {
		t.Fatal("booted a while [tryboot] names b: the flag was gone, a fallback")
	}
	sw.Commit("b")
	if got := string(mustRead(t, filepath.Join(dir, "autoboot.txt"))); !bytes.Contains([]byte(got), []byte("[all]\ntryboot_a_b=1\nboot_partition=3\n")) || bytes.Contains([]byte(got), []byte("[tryboot]")) {
		t.Fatalf("%s", got)
	}
	if sw.RebootArgument() != "0 tryboot" {
		t.Fatal(sw.RebootArgument())
	}
}

func mustRead(t *testing.T, path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A tryboot update end to end on the files the Pi firmware reads: the release's boot files go
// into the other slot's own boot partition (its cmdline.txt naming that slot), [tryboot]
// names that partition, the trial reboot carries "0 tryboot", and a commit rewrites [all].
func TestTrybootWritesTheSlotsOwnBootPartition(t *testing.T) {
	boot, partA, partB := t.TempDir(), t.TempDir(), t.TempDir()
	parts := map[string]string{"a": partA, "b": partB}
	cfg := SlotsConfig{Mechanism: "rpi-tryboot", Implemented: true, Paths: map[string]string{
		"autoboot": "autoboot.txt", "boot_partition_number_a": "2", "boot_partition_number_b": "3",
		"boot_partition_a": "ak-boot-a", "boot_partition_b": "ak-boot-b",
		"reboot_argument": "0 tryboot", "cmdline": "cmdline.txt"}}
	sw := newLoaderSwitch(cfg, dirBoot(boot)).(*trybootSwitch)
	sw.slotBoot = func(slot string) BootFiles { return dirBoot(parts[slot]) }
	os.WriteFile(filepath.Join(boot, "autoboot.txt"), Autoboot{Committed: 2}.Format(), 0o644)
	// slot a runs release 1; release 2 is built (like every release) for slot a
	oldKernel := bytes.Repeat([]byte("kernel-1"), 4096)
	os.WriteFile(filepath.Join(partA, "vmlinuz"), oldKernel, 0o644)
	os.WriteFile(filepath.Join(partA, "cmdline.txt"), []byte("console=ttyS0 ak.roothash=1111 ak.slot=a\n"), 0o644)
	newKernel := append([]byte(nil), oldKernel...)
	copy(newKernel[4096:], "kernel-2")
	cmdline := []byte("console=ttyS0 ak.roothash=2222 ak.slot=a\n")
	config := []byte("kernel=vmlinuz\ninitramfs initrd.img followkernel\n")
	files := map[string][]byte{}
	rel := Release{ChunkSize: 4096}
	for name, data := range map[string][]byte{"vmlinuz": newKernel, "cmdline.txt": cmdline, "config.txt": config} {
		a, chunks := artefact(name, data, 4096)
		files[name], files[name+".chunks"] = data, chunks
		rel.Boot = append(rel.Boot, a)
	}
	srv, _ := serve(t, files)
	agent := &Agent{sw: sw, boot: BootInfo{Slot: "a"}}
	f := NewFetcher(srv.URL)
	if err := agent.writeBootFiles(f, rel, "b"); err != nil {
		t.Fatal(err)
	}
	if got := string(mustRead(t, filepath.Join(partB, "cmdline.txt"))); got != "console=ttyS0 ak.roothash=2222 ak.slot=b\n" {
		t.Fatalf("slot b's cmdline.txt: %q", got)
	}
	if !bytes.Equal(mustRead(t, filepath.Join(partB, "vmlinuz")), newKernel) || !bytes.Equal(mustRead(t, filepath.Join(partB, "config.txt")), config) {
		t.Fatal("slot b's files differ from the release's")
	}
	if got := names(t, partA); !reflect.DeepEqual(got, []string{"cmdline.txt", "vmlinuz"}) {
		t.Fatalf("the running slot's partition changed: %v", got)
	}
	// unchanged chunks came from the running slot: one kernel chunk and the small files
	if f.Downloaded >= int64(len(newKernel)) {
		t.Fatalf("downloaded %d bytes for a %d-byte kernel with one changed chunk", f.Downloaded, len(newKernel))
	}
	// written again (a resumed attempt): the same files
	if err := agent.writeBootFiles(NewFetcher(srv.URL), rel, "b"); err != nil {
		t.Fatal(err)
	}
	if got := string(mustRead(t, filepath.Join(partB, "cmdline.txt"))); got != "console=ttyS0 ak.roothash=2222 ak.slot=b\n" {
		t.Fatalf("slot b's cmdline.txt after a resume: %q", got)
	}
	if err := sw.Arm("b"); err != nil {
		t.Fatal(err)
	}
	// what the firmware does with these files: with the tryboot flag [tryboot]'s partition
	// (3: slot b); on any other boot [all]'s (2: slot a)
	if got := ParseAutoboot(mustRead(t, filepath.Join(boot, "autoboot.txt"))); got != (Autoboot{2, 3}) {
		t.Fatalf("%+v", got)
	}
	if r, ok := SlotSwitch(sw).(RebootArgument); !ok || r.RebootArgument() != "0 tryboot" {
		t.Fatal("the trial reboot does not carry the tryboot flag")
	}
	if err := sw.Commit("b"); err != nil {
		t.Fatal(err)
	}
	if got := ParseAutoboot(mustRead(t, filepath.Join(boot, "autoboot.txt"))); got != (Autoboot{3, 0}) {
		t.Fatalf("after commit: %+v", got)
	}
	if _, err := os.Stat(filepath.Join(boot, "autoboot.txt.new")); !os.IsNotExist(err) {
		t.Fatal("autoboot.txt was not replaced by rename")
	}
}

func TestOnlyTrybootRewritesCmdline(t *testing.T) {
	sw := &trybootSwitch{cmdline: "cmdline.txt"}
	if got := string(sw.SlotBootFile("cmdline.txt", []byte("a=b ak.slot=a\n"), "b")); got != "a=b ak.slot=b\n" {
		t.Fatal(got)
	}
	if got := string(sw.SlotBootFile("config.txt", []byte("ak.slot=a\n"), "b")); got != "ak.slot=a\n" {
		t.Fatal(got)
	}
	var u SlotSwitch = &ubootSwitch{}
	if _, ok := u.(SlotBootPartitions); ok {
		t.Fatal("U-Boot's slots are directories on the boot partition")
	}
}
