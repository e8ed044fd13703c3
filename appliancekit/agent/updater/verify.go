package main

// Signatures: Debian's minisign (in the sealed root) checks SHA256SUMS.minisig against the
// public key built into the image; every other file is checked by its sha256 from there.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// verifyDir holds the files minisign reads (a variable: unit tests run off the device).
var verifyDir = RunDir

// VerifySums checks the detached signature of sums with minisign; returns nil when good.
func VerifySums(minisign, pubkey string, sums, sig []byte) error {
	if pubkey == "" {
		return fmt.Errorf("no update key is built into this image (build with -s update_key=...)")
	}
	dir, err := os.MkdirTemp(verifyDir, "verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "SHA256SUMS")
	sigFile := file + ".minisig"
	if err := os.WriteFile(file, sums, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(sigFile, sig, 0o600); err != nil {
		return err
	}
	cmd := exec.Command(minisign, "-V", "-q", "-P", pubkey, "-m", file, "-x", sigFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		detail := strings.TrimSpace(string(out))
		if detail == "" {
			detail = err.Error()
		}
		return fmt.Errorf("signature does not verify: %s", lastLine(detail))
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
