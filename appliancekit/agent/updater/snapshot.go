package main

// /data kept for a rollback. Services may migrate their data when a new release starts
// (database schemas, index formats); a rollback to the old release must find the data as it
// was. Before the trial boot (services stopped), everything on /data except the agent's own
// directory is copied to a snapshot on the same filesystem, if it fits in the budget
// (a share of the free space). A rollback moves the snapshot back (renames: instant); a
// commit deletes it.

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Skip on /data: the agent's and the initramfs' own state, and ext4's lost+found.
var snapshotSkip = map[string]bool{".appliancekit": true, "lost+found": true}

// SnapshotResult says what a snapshot cost.
type SnapshotResult struct {
	Bytes         int64
	Seconds       float64
	Free          int64 // bytes free on /data before the copy
	Used          int64 // bytes in use on /data before the copy (the agent's own state too)
	BudgetPercent int
}

// TakeSnapshot copies dataDir's entries into dest (replacing an older snapshot).
func TakeSnapshot(dataDir, dest string, budgetPercent int) (SnapshotResult, error) {
	start := time.Now()
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return SnapshotResult{}, err
	}
	var need int64
	for _, e := range entries {
		if !snapshotSkip[e.Name()] {
			need += treeSize(filepath.Join(dataDir, e.Name()))
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dataDir, &fs); err != nil {
		return SnapshotResult{}, err
	}
	free := int64(fs.Bavail) * int64(fs.Bsize)
	used := (int64(fs.Blocks) - int64(fs.Bfree)) * int64(fs.Bsize)
	if budgetPercent <= 0 {
		budgetPercent = 50
	}
	if need > free*int64(budgetPercent)/100 {
		return SnapshotResult{}, fmt.Errorf("keeping /data for a rollback needs %d bytes, the budget is %d%% of %d free", need, budgetPercent, free)
	}
	os.RemoveAll(dest + ".new")
	os.RemoveAll(dest)
	if err := os.MkdirAll(dest+".new", 0o700); err != nil {
		return SnapshotResult{}, err
	}
	for _, e := range entries {
		if snapshotSkip[e.Name()] {
			continue
		}
		if err := copyTree(filepath.Join(dataDir, e.Name()), filepath.Join(dest+".new", e.Name())); err != nil {
			return SnapshotResult{}, err
		}
	}
	syscall.Sync()
	if err := os.Rename(dest+".new", dest); err != nil {
		return SnapshotResult{}, err
	}
	syscall.Sync()
	return SnapshotResult{need, time.Since(start).Seconds(), free, used, budgetPercent}, nil
}

// RestoreSnapshot puts the snapshot's entries back in place of dataDir's (renames).
func RestoreSnapshot(dataDir, snap string) (bool, error) {
	if _, err := os.Stat(snap); err != nil {
		return false, nil
	}
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return false, err
	}
	trash := snap + ".trash"
	os.RemoveAll(trash)
	if err := os.MkdirAll(trash, 0o700); err != nil {
		return false, err
	}
	for _, e := range entries {
		if !snapshotSkip[e.Name()] {
			if err := os.Rename(filepath.Join(dataDir, e.Name()), filepath.Join(trash, e.Name())); err != nil {
				return false, err
			}
		}
	}
	kept, err := os.ReadDir(snap)
	if err != nil {
		return false, err
	}
	for _, e := range kept {
		if err := os.Rename(filepath.Join(snap, e.Name()), filepath.Join(dataDir, e.Name())); err != nil {
			return false, err
		}
	}
	syscall.Sync()
	os.RemoveAll(trash)
	os.RemoveAll(snap)
	return true, nil
}

func treeSize(path string) int64 {
	var n int64
	filepath.Walk(path, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// copyTree copies files, directories and symlinks with modes, owners and mtimes.
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		st, _ := info.Sys().(*syscall.Stat_t)
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		case info.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := copyFile(path, target, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return nil // sockets, fifos: recreated by their services
		}
		if st != nil {
			os.Lchown(target, int(st.Uid), int(st.Gid))
		}
		if info.Mode()&os.ModeSymlink == 0 {
			os.Chmod(target, info.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky))
			os.Chtimes(target, info.ModTime(), info.ModTime())
		}
		return nil
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
