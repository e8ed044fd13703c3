package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// a release directory served with Range support (http.ServeContent), counting bytes sent
func serve(t *testing.T, files map[string][]byte) (*httptest.Server, *int64) {
	var sent int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := files[r.URL.Path[1:]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		cw := &countingWriter{ResponseWriter: w, n: &sent}
		http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv, &sent
}

type countingWriter struct {
	http.ResponseWriter
	n *int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	*c.n += int64(len(p))
	return c.ResponseWriter.Write(p)
}

func artefact(name string, data []byte, chunk int) (Artefact, []byte) {
	var chunks []byte
	for off := 0; off < len(data); off += chunk {
		end := off + chunk
		if end > len(data) {
			end = len(data)
		}
		s := sha256.Sum256(data[off:end])
		chunks = append(chunks, s[:]...)
	}
	sum, csum := sha256.Sum256(data), sha256.Sum256(chunks)
	return Artefact{Name: name, Path: name, Size: int64(len(data)), Sha256: hex.EncodeToString(sum[:]),
		Chunks: name + ".chunks", ChunksSha256: hex.EncodeToString(csum[:])}, chunks
}

func TestWriteArtefactFetchesOnlyChangedChunksAndResumes(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	old := make([]byte, 64*4096)
	rng.Read(old)
	newer := append([]byte(nil), old...)
	copy(newer[10*4096:], []byte("changed"))
	newer[40*4096+5] ^= 1
	a, chunks := artefact("root.img", newer, 4096)
	srv, sent := serve(t, map[string][]byte{"root.img": newer, "root.img.chunks": chunks})
	dir := t.TempDir()
	running, _ := os.Create(filepath.Join(dir, "running"))
	running.Write(old)
	target, _ := os.Create(filepath.Join(dir, "target"))
	target.Truncate(int64(len(newer)) + 8192)
	rel := Release{ChunkSize: 4096}
	f := NewFetcher(srv.URL)
	n, err := WriteArtefact(f, rel, a, target, running, 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}
	// two changed chunks plus the chunk list
	if n != int64(2*4096+len(chunks)) {
		t.Fatalf("downloaded %d bytes", n)
	}
	got := make([]byte, len(newer))
	target.ReadAt(got, 0)
	if !bytes.Equal(got, newer) {
		t.Fatal("target differs")
	}
	// again: already complete, known from its chunks; only the chunk list is downloaded
	before := *sent
	if n, err := WriteArtefact(NewFetcher(srv.URL), rel, a, target, running, 1<<30, nil); err != nil || n != int64(len(chunks)) || *sent != before+int64(len(chunks)) {
		t.Fatalf("second run: %d %v", n, err)
	}
	// interrupted: the target holds half the artefact; the rest comes from the running
	// copy and the network, and the target's good half is neither copied nor downloaded
	for i := 32 * 4096; i < len(newer); i++ {
		target.WriteAt([]byte{0}, int64(i))
	}
	before = *sent
	if n, err := WriteArtefact(NewFetcher(srv.URL), rel, a, target, running, 1<<30, nil); err != nil || n != int64(4096+len(chunks)) {
		t.Fatalf("resumed: %d %v", n, err)
	}
	target.ReadAt(got, 0)
	if !bytes.Equal(got, newer) {
		t.Fatal("resumed target differs")
	}
	// too small a slot is refused
	if _, err := WriteArtefact(f, rel, a, target, running, 4096, nil); err == nil {
		t.Fatal("wrote past the slot")
	}
}

func TestWriteArtefactRefusesTruncatedDownload(t *testing.T) {
	data := make([]byte, 8*4096)
	rand.New(rand.NewSource(2)).Read(data)
	a, chunks := artefact("root.img", data, 4096)
	srv, _ := serve(t, map[string][]byte{"root.img": data[:5*4096], "root.img.chunks": chunks})
	target, _ := os.Create(filepath.Join(t.TempDir(), "target"))
	target.Truncate(int64(len(data)))
	if _, err := WriteArtefact(NewFetcher(srv.URL), Release{ChunkSize: 4096}, a, target, nil, 1<<30, nil); err == nil {
		t.Fatal("a truncated artefact was accepted")
	}
}

func TestWriteBootFileSameAsRunningDownloadsNothing(t *testing.T) {
	data := make([]byte, 9*4096+100)
	rand.New(rand.NewSource(3)).Read(data)
	a, chunks := artefact("vmlinuz", data, 4096)
	srv, sent := serve(t, map[string][]byte{"vmlinuz": data, "vmlinuz.chunks": chunks})
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "slot-a"), 0o755)
	os.WriteFile(filepath.Join(dir, "slot-a", "vmlinuz"), data, 0o644)
	rel := Release{ChunkSize: 4096}
	n, err := WriteBootFile(NewFetcher(srv.URL), rel, a, filepath.Join(dir, "slot-b"), filepath.Join(dir, "slot-a"))
	if err != nil || n != 0 || *sent != 0 {
		t.Fatalf("%d %v (%d sent)", n, err, *sent)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "slot-b", "vmlinuz")); !bytes.Equal(got, data) {
		t.Fatal("slot b's copy differs")
	}
	// a changed file: only its changed chunk and the chunk list
	changed := append([]byte(nil), data...)
	changed[5*4096+7] ^= 1
	a, chunks = artefact("vmlinuz", changed, 4096)
	srv, _ = serve(t, map[string][]byte{"vmlinuz": changed, "vmlinuz.chunks": chunks})
	os.Remove(filepath.Join(dir, "slot-b", "vmlinuz"))
	n, err = WriteBootFile(NewFetcher(srv.URL), rel, a, filepath.Join(dir, "slot-b"), filepath.Join(dir, "slot-a"))
	if err != nil || n != int64(4096+len(chunks)) {
		t.Fatalf("%d %v", n, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "slot-b", "vmlinuz")); !bytes.Equal(got, changed) {
		t.Fatal("slot b's copy differs")
	}
}
