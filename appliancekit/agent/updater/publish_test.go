package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// a signed release as publish writes it: SHA256SUMS, its minisig and update.json
type signedRelease map[string][]byte

func makeRelease(t *testing.T, secret string, version int64) signedRelease {
	dir := t.TempDir()
	doc, _ := json.Marshal(map[string]any{
		"format": 1, "recipe": "homepage", "board": "qemu-virt-arm64", "version": version,
		"root_hash": strings.Repeat("ab", 32), "chunk_size": 4096,
		"root": map[string]any{"path": "update/root.img", "size": 4096, "sha256": strings.Repeat("0", 64),
			"chunks": "update/root.img.chunks", "chunks_sha256": strings.Repeat("1", 64)},
	})
	sum := sha256.Sum256(doc)
	sums := hex.EncodeToString(sum[:]) + "  " + UpdateFile + "\n"
	file := filepath.Join(dir, "SHA256SUMS")
	if err := os.WriteFile(file, []byte(sums), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("minisign", "-S", "-s", secret, "-m", file).CombinedOutput(); err != nil {
		t.Fatalf("minisign -S: %v %s", err, out)
	}
	sig, err := os.ReadFile(file + ".minisig")
	if err != nil {
		t.Fatal(err)
	}
	return signedRelease{"SHA256SUMS": []byte(sums), "SHA256SUMS.minisig": sig, UpdateFile: doc}
}

func keyPair(t *testing.T) (public, secret string) {
	dir := t.TempDir()
	pub, sec := filepath.Join(dir, "k.pub"), filepath.Join(dir, "k.key")
	if out, err := exec.Command("minisign", "-G", "-W", "-p", pub, "-s", sec).CombinedOutput(); err != nil {
		t.Fatalf("minisign -G: %v %s", err, out)
	}
	data, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return lines[len(lines)-1], sec
}

// a repository whose release directory is swapped to `next` right after the first request
// for SHA256SUMS: the publish falls between the agent's first and second request
func swappingServer(t *testing.T, first, next signedRelease) *httptest.Server {
	var mu sync.Mutex
	current := first
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		data, ok := current[strings.TrimPrefix(r.URL.Path, "/")]
		if r.URL.Path == "/SHA256SUMS" && next != nil {
			current = next
		}
		mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func checkRelease(t *testing.T, srv *httptest.Server, public string) (Release, error, bool) {
	f := NewFetcher(srv.URL)
	sums, err := f.Get("SHA256SUMS", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: AgentConfig{Minisign: "minisign", PublicKey: public}}
	rel, err := a.readRelease(f, sums)
	return rel, err, err != nil && changedWhileRead(f, sums)
}

func TestAPublishBetweenTwoRequestsIsNotAForgery(t *testing.T) {
	if _, err := exec.LookPath("minisign"); err != nil {
		t.Skip("needs minisign")
	}
	verifyDir = t.TempDir()
	public, secret := keyPair(t)
	v1, v2 := makeRelease(t, secret, 1), makeRelease(t, secret, 2)

	// v1's SHA256SUMS, then v2's signature: it fails like a forgery, and reading
	// SHA256SUMS again shows the publish
	_, err, changed := checkRelease(t, swappingServer(t, v1, v2), public)
	if err == nil || !strings.HasPrefix(err.Error(), "refused: ") || !changed {
		t.Fatalf("mixed releases: err=%v changed=%v, want a refusal that reads as a publish", err, changed)
	}

	// a forged signature on an unchanging release stays a refusal
	_, other := keyPair(t)
	forged := makeRelease(t, other, 1)
	forged[UpdateFile] = v1[UpdateFile]
	forged["SHA256SUMS"] = v1["SHA256SUMS"]
	_, err, changed = checkRelease(t, swappingServer(t, forged, nil), public)
	if err == nil || changed {
		t.Fatalf("forged: err=%v changed=%v, want a refusal and no publish", err, changed)
	}

	// an update.json that does not match the signed sums, nothing changing: a refusal
	tampered := signedRelease{"SHA256SUMS": v1["SHA256SUMS"], "SHA256SUMS.minisig": v1["SHA256SUMS.minisig"], UpdateFile: v2[UpdateFile]}
	_, err, changed = checkRelease(t, swappingServer(t, tampered, nil), public)
	if err == nil || !strings.Contains(err.Error(), "does not match the signed SHA256SUMS") || changed {
		t.Fatalf("tampered: err=%v changed=%v", err, changed)
	}

	// one whole release reads as it is
	rel, err, _ := checkRelease(t, swappingServer(t, v2, nil), public)
	if err != nil || rel.Version != 2 {
		t.Fatalf("whole release: %v %+v", err, rel)
	}
}
