package main

import (
	"strings"
	"testing"
)

func rel(recipe, board string, version int64, root string) Release {
	return Release{Recipe: recipe, Board: board, Version: version, RootHash: root}
}

func TestDecideRefusalRules(t *testing.T) {
	cur := Running{"homepage", "qemu-virt-arm64", 100, "r1"}
	failed := []FailedRelease{{Version: 300, RootHash: "r3", Reason: "crashed"}}
	cases := []struct {
		name      string
		r         Release
		downgrade bool
		take      bool
		refuse    string
	}{
		{"newer", rel("homepage", "qemu-virt-arm64", 200, "r2"), false, true, ""},
		{"other recipe", rel("dns", "qemu-virt-arm64", 200, "r2"), false, false, "recipe"},
		{"other board", rel("homepage", "rpi4", 200, "r2"), false, false, "board"},
		{"failed before", rel("homepage", "qemu-virt-arm64", 300, "r3"), false, false, "failed here before"},
		{"failed before even as a downgrade", rel("homepage", "qemu-virt-arm64", 50, "r3"), true, false, "failed"},
		{"downgrade", rel("homepage", "qemu-virt-arm64", 50, "r0"), false, false, "older"},
		{"downgrade allowed", rel("homepage", "qemu-virt-arm64", 50, "r0"), true, true, ""},
		{"same version other bytes", rel("homepage", "qemu-virt-arm64", 100, "rx"), false, false, "running version"},
		{"running", rel("homepage", "qemu-virt-arm64", 100, "r1"), false, false, ""},
	}
	for _, c := range cases {
		d := Decide(cur, c.r, failed, c.downgrade)
		if d.Take != c.take {
			t.Errorf("%s: take=%v, want %v (%+v)", c.name, d.Take, c.take, d)
		}
		if c.refuse != "" && !strings.Contains(d.Refuse, c.refuse) {
			t.Errorf("%s: refuse=%q, want it to mention %q", c.name, d.Refuse, c.refuse)
		}
		if c.refuse == "" && d.Refuse != "" {
			t.Errorf("%s: refused: %s", c.name, d.Refuse)
		}
	}
}

const hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseReleaseChecksFields(t *testing.T) {
	good := `{"format":1,"recipe":"homepage","board":"b","version":1,"root_hash":"x","chunk_size":4096,
	"root":{"name":"","path":"update/root.img","size":8192,"sha256":"` + hash + `","chunks":"update/root.chunks","chunks_sha256":"` + hash + `"},
	"boot":[{"name":"Image","path":"update/boot/Image","size":1,"sha256":"` + hash + `","chunks":"update/boot/Image.chunks","chunks_sha256":"` + hash + `"}]}`
	if _, err := ParseRelease([]byte(good)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		strings.Replace(good, `"format":1`, `"format":2`, 1),
		strings.Replace(good, `"update/boot/Image"`, `"../../etc/passwd"`, 1),
		strings.Replace(good, `"name":"Image"`, `"name":"../x"`, 1),
		strings.Replace(good, `"chunk_size":4096`, `"chunk_size":100`, 1),
		strings.Replace(good, hash, "abc", 1),
		`{"format":1}`,
		`not json`,
	} {
		if _, err := ParseRelease([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestParseSums(t *testing.T) {
	sums, err := ParseSums([]byte(hash + "  update/update.json\n" + hash + " *disk.img\n"))
	if err != nil || sums["update/update.json"] != hash || sums["disk.img"] != hash {
		t.Fatalf("%v %v", sums, err)
	}
	if _, err := ParseSums([]byte("garbage\n")); err == nil {
		t.Fatal("accepted garbage")
	}
}
