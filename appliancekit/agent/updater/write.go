package main

// Writing a release into the other slot: the root partition and the slot's boot files,
// each artefact chunk by chunk from the target itself (resume), the running slot (same
// bytes) or the network, then read back and checked against the signed sha256.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// readBlock is how much one read takes in: hashing 4 KiB chunks one pread each costs a
// system call per chunk, which an emulated CPU (the test's TCG) pays dearly.
const readBlock = 1 << 20

// chunkHashes of the first `size` bytes of r (fewer when r ends early). `need` (nil: all)
// says which chunks are wanted; the others are left zero and not read.
func chunkHashes(r io.ReaderAt, size, chunk int64, need func(i int) bool) [][32]byte {
	var out [][32]byte
	per := readBlock / chunk
	if per < 1 {
		per = 1
	}
	buf := make([]byte, per*chunk)
	for off := int64(0); off < size; off += per * chunk {
		first := int(off / chunk)
		n := per * chunk
		if size-off < n {
			n = size - off
		}
		count := int((n + chunk - 1) / chunk)
		wanted := need == nil
		for i := first; !wanted && i < first+count; i++ {
			wanted = need(i)
		}
		if !wanted {
			out = append(out, make([][32]byte, count)...)
			continue
		}
		got, _ := r.ReadAt(buf[:n], off)
		for i := 0; i < count; i++ {
			lo, hi := int64(i)*chunk, int64(i+1)*chunk
			if hi > n {
				hi = n
			}
			if int64(got) < hi {
				return out // r ends early: no hash for a partial chunk
			}
			if need == nil || need(first+i) {
				out = append(out, sha256.Sum256(buf[lo:hi]))
			} else {
				out = append(out, [32]byte{})
			}
		}
	}
	return out
}

// sha256Of the first size bytes of r.
func sha256Of(r io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.NewSectionReader(r, 0, size), make([]byte, readBlock)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// sizeOf a regular file (-1 for anything else: a partition reports no size to stat).
func sizeOf(r io.ReaderAt) int64 {
	if st, ok := r.(interface{ Stat() (os.FileInfo, error) }); ok {
		if fi, err := st.Stat(); err == nil && fi.Mode().IsRegular() {
			return fi.Size()
		}
	}
	return -1
}

// WriteArtefact makes target[0:a.Size] equal the artefact; `running` (may be nil) is the
// running slot's copy. Returns the bytes downloaded. `limit` is the room in the target.
func WriteArtefact(f *Fetcher, rel Release, a Artefact, target *os.File, running io.ReaderAt, limit int64, onWrite func()) (int64, error) {
	return writeArtefact(f, rel, a, target, true, running, limit, onWrite)
}

// writeArtefact hashes each byte as few times as it can (an update under an emulated CPU
// spent most of its slot write hashing: five passes over each artefact): the running copy
// is hashed whole only when it may be the artefact itself (a boot file of the same size;
// then nothing is downloaded); otherwise the chunk list comes first (its sha256 is in the
// signed update.json), the target's chunks are hashed once (`targetMayHold`: it may hold
// some from an earlier attempt; false for a file just created), the running copy's only
// where the target's differ, and what was written is read back once against the signed
// sha256. A target whose chunks all match the signed list already holds the artefact.
func writeArtefact(f *Fetcher, rel Release, a Artefact, target *os.File, targetMayHold bool, running io.ReaderAt, limit int64, onWrite func()) (int64, error) {
	if a.Size > limit {
		return 0, fmt.Errorf("%s needs %d bytes, the slot has %d (reflash once with the new layout)", a.Path, a.Size, limit)
	}
	if running != nil && sizeOf(running) == a.Size {
		if got, err := sha256Of(running, a.Size); err == nil && got == a.Sha256 {
			if err := copyRange(running, target, a.Size); err != nil {
				return 0, err
			}
			return 0, checkWritten(target, a)
		}
	}
	before := f.Downloaded
	chunkData, err := f.Get(a.Chunks, 64<<20)
	if err != nil {
		return f.Downloaded - before, err
	}
	if sum := sha256.Sum256(chunkData); hex.EncodeToString(sum[:]) != a.ChunksSha256 {
		return f.Downloaded - before, fmt.Errorf("%s: sha256 does not match update.json", a.Chunks)
	}
	want, ok := SplitChunks(chunkData)
	if !ok || int64(len(want)) != (a.Size+rel.ChunkSize-1)/rel.ChunkSize {
		return f.Downloaded - before, fmt.Errorf("%s: wrong number of chunks", a.Chunks)
	}
	var have [][32]byte
	if targetMayHold {
		have = chunkHashes(target, a.Size, rel.ChunkSize, nil)
	}
	inPlace := func(i int) bool { return i < len(have) && have[i] == want[i] }
	complete := len(have) == len(want)
	for i := 0; complete && i < len(want); i++ {
		complete = inPlace(i)
	}
	if complete {
		return f.Downloaded - before, nil // every chunk already matches the signed list
	}
	var run [][32]byte
	if running != nil {
		run = chunkHashes(running, a.Size, rel.ChunkSize, func(i int) bool { return !inPlace(i) })
	}
	plan := PlanChunks(want, have, run, rel.ChunkSize, a.Size, 64<<10)
	if err := copyChunks(plan, running, target, rel.ChunkSize, a.Size); err != nil {
		return f.Downloaded - before, err
	}
	for _, r := range plan.Ranges {
		err := f.GetRange(a.Path, r, func(off int64, data []byte) error {
			_, err := target.WriteAt(data, off)
			if onWrite != nil {
				onWrite()
			}
			return err
		})
		if err != nil {
			return f.Downloaded - before, err
		}
	}
	if err := target.Sync(); err != nil {
		return f.Downloaded - before, err
	}
	return f.Downloaded - before, checkWritten(target, a)
}

// copyChunks copies the plan's Copy chunks from running to target, a run of neighbours
// (up to readBlock) at a time.
func copyChunks(plan ChunkPlan, running io.ReaderAt, target *os.File, chunk, size int64) error {
	buf := make([]byte, readBlock)
	for i := 0; i < len(plan.Sources); {
		if plan.Sources[i] != Copy {
			i++
			continue
		}
		j := i
		for j < len(plan.Sources) && plan.Sources[j] == Copy && int64(j-i+1)*chunk <= readBlock {
			j++
		}
		off, end := int64(i)*chunk, int64(j)*chunk
		if end > size {
			end = size
		}
		if _, err := running.ReadAt(buf[:end-off], off); err != nil {
			return err
		}
		if _, err := target.WriteAt(buf[:end-off], off); err != nil {
			return err
		}
		i = j
	}
	return nil
}

func copyRange(src io.ReaderAt, dst *os.File, size int64) error {
	buf := make([]byte, readBlock)
	for off := int64(0); off < size; {
		n := int64(len(buf))
		if size-off < n {
			n = size - off
		}
		if _, err := src.ReadAt(buf[:n], off); err != nil {
			return err
		}
		if _, err := dst.WriteAt(buf[:n], off); err != nil {
			return err
		}
		off += n
	}
	return dst.Sync()
}

func checkWritten(target *os.File, a Artefact) error {
	got, err := sha256Of(target, a.Size)
	if err != nil {
		return err
	}
	if got != a.Sha256 {
		return fmt.Errorf("%s: written bytes have sha256 %s, the signed release says %s", a.Path, got[:12], a.Sha256[:12])
	}
	return nil
}

// sameFile says whether path holds exactly the artefact (size and sha256).
func sameFile(path string, a Artefact) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() != a.Size {
		return false
	}
	got, err := sha256Of(f, a.Size)
	return err == nil && got == a.Sha256
}

// WriteBootFile writes a boot file into dir on the boot partition: NAME.new, verified,
// then renamed over NAME. The running slot's copy of the same name seeds unchanged chunks.
func WriteBootFile(f *Fetcher, rel Release, a Artefact, dir, runningDir string) (int64, error) {
	dest := filepath.Join(dir, a.Name)
	if sameFile(dest, a) {
		return 0, nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return 0, err
	}
	tmp := dest + ".new"
	_, statErr := os.Stat(tmp)
	resumed := statErr == nil // a .new left by an attempt that was cut short
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	if err := out.Truncate(a.Size); err != nil {
		return 0, err
	}
	// The clusters just taken, and the directory entry that owns them, reach the disk now:
	// a power cut from here on leaves a NAME.new to resume, not a chain no file owns.
	if err := out.Sync(); err != nil {
		return 0, err
	}
	var running io.ReaderAt
	if rf, err := os.Open(filepath.Join(runningDir, a.Name)); err == nil {
		defer rf.Close()
		running = rf
	}
	n, err := writeArtefact(f, rel, a, out, resumed, running, a.Size, nil)
	if err != nil {
		return n, err
	}
	if err := out.Close(); err != nil {
		return n, err
	}
	return n, os.Rename(tmp, dest)
}

// WriteSlotBootFiles writes a release's boot files into dir (the target slot's directory or
// partition), seeding unchanged chunks from runningDir; `fix` (may be nil) turns a verified
// file into the slot's own copy (SlotBootPartitions.SlotBootFile), written atomically.
func WriteSlotBootFiles(f *Fetcher, rel Release, dir, runningDir string, fix func(name string, data []byte) []byte) error {
	for _, b := range rel.Boot {
		if _, err := WriteBootFile(f, rel, b, dir, runningDir); err != nil {
			return err
		}
		if fix == nil {
			continue
		}
		dest := filepath.Join(dir, b.Name)
		data, err := os.ReadFile(dest)
		if err != nil {
			return err
		}
		if fixed := fix(b.Name, data); !bytes.Equal(fixed, data) {
			if err := WriteAtomic(dest, fixed, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
