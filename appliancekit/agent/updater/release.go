package main

// Releases as the deploy repository publishes them (appliancekit/publish/update.py), and the
// rules that decide whether this device takes one. Everything here is pure: tested by
// release_test.go.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// UpdateFile names the release description inside RECIPE/BOARD/ of the deploy repository.
const UpdateFile = "update/update.json"

// Artefact is one file the agent may range-read: the slot's root (erofs + verity) or a
// boot file. Chunks lists the sha256 of each ChunkSize piece, so the agent fetches only
// the pieces its own slots do not already hold.
type Artefact struct {
	Name         string `json:"name"`
	Path         string `json:"path"`
	Size         int64  `json:"size"`
	Sha256       string `json:"sha256"`
	Chunks       string `json:"chunks"`
	ChunksSha256 string `json:"chunks_sha256"`
}

// Release is update.json.
type Release struct {
	Format      int        `json:"format"`
	Recipe      string     `json:"recipe"`
	Board       string     `json:"board"`
	Arch        string     `json:"arch"`
	Version     int64      `json:"version"`
	ImageSha256 string     `json:"image_sha256"`
	RootHash    string     `json:"root_hash"`
	ChunkSize   int64      `json:"chunk_size"`
	Root        Artefact   `json:"root"`
	Boot        []Artefact `json:"boot"`
}

// ParseRelease checks what the agent relies on; the sha256 of the document itself was
// checked against the signed SHA256SUMS before.
func ParseRelease(data []byte) (Release, error) {
	var r Release
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("update.json: %v", err)
	}
	if r.Format != 1 {
		return r, fmt.Errorf("update.json: format %d is not 1", r.Format)
	}
	if r.Recipe == "" || r.Board == "" || r.RootHash == "" {
		return r, fmt.Errorf("update.json: recipe, board or root_hash missing")
	}
	if r.ChunkSize <= 0 || r.ChunkSize%512 != 0 {
		return r, fmt.Errorf("update.json: bad chunk_size %d", r.ChunkSize)
	}
	for _, a := range append([]Artefact{r.Root}, r.Boot...) {
		if !validHex(a.Sha256) || !validHex(a.ChunksSha256) || a.Size < 0 || a.Path == "" || a.Chunks == "" {
			return r, fmt.Errorf("update.json: artefact %q is incomplete", a.Name)
		}
		if strings.Contains(a.Path, "..") || strings.Contains(a.Chunks, "..") || strings.HasPrefix(a.Path, "/") {
			return r, fmt.Errorf("update.json: artefact %q has a bad path", a.Name)
		}
		if a.Name != "" && (strings.Contains(a.Name, "..") || strings.HasPrefix(a.Name, "/")) {
			return r, fmt.Errorf("update.json: bad boot file name %q", a.Name)
		}
	}
	return r, nil
}

func validHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// ParseSums reads GNU coreutils sha256sum output ("HASH  NAME" or "HASH *NAME").
func ParseSums(data []byte) (map[string]string, error) {
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			continue
		}
		if len(line) < 67 || !validHex(line[:64]) || line[64] != ' ' {
			return nil, fmt.Errorf("SHA256SUMS: malformed line %q", line)
		}
		name := strings.TrimPrefix(line[65:], "*")
		name = strings.TrimPrefix(name, " ")
		sums[name] = strings.ToLower(line[:64])
	}
	return sums, sc.Err()
}

// Running is what this device runs now.
type Running struct {
	Recipe   string
	Board    string
	Version  int64
	RootHash string
}

// Decision is what to do with a published release.
type Decision struct {
	Take   bool   // write it to the other slot and try it
	Refuse string // why not, when the release is refused (shown as the last result)
	Note   string // why not, when there is simply nothing to do
}

// Decide applies the refusal rules: another recipe or board, a release that failed here
// before, a downgrade (unless allowed per device), the release already running.
func Decide(cur Running, rel Release, failed []FailedRelease, allowDowngrade bool) Decision {
	if rel.Recipe != cur.Recipe {
		return Decision{Refuse: fmt.Sprintf("release is for recipe %q, this is %q", rel.Recipe, cur.Recipe)}
	}
	if rel.Board != cur.Board {
		return Decision{Refuse: fmt.Sprintf("release is for board %q, this is %q", rel.Board, cur.Board)}
	}
	if rel.RootHash == cur.RootHash {
		return Decision{Note: "up to date"}
	}
	for _, f := range failed {
		if f.RootHash == rel.RootHash {
			return Decision{Refuse: fmt.Sprintf("release %d failed here before (%s)", rel.Version, f.Reason)}
		}
	}
	if rel.Version < cur.Version && !allowDowngrade {
		return Decision{Refuse: fmt.Sprintf("release %d is older than the running %d (downgrade not allowed)", rel.Version, cur.Version)}
	}
	if rel.Version == cur.Version && !allowDowngrade {
		return Decision{Refuse: fmt.Sprintf("release %d has the running version but other contents", rel.Version)}
	}
	return Decision{Take: true}
}

// FailedRelease is a release that was tried here and did not commit.
type FailedRelease struct {
	Version  int64  `json:"version"`
	RootHash string `json:"root_hash"`
	Reason   string `json:"reason"`
	At       string `json:"at"`
}
