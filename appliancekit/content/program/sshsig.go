package main

// Signed commits: git's SSH signatures (gpg.format = ssh, `git commit -S`), checked against
// the one Ed25519 key the device allows. The format is OpenSSH's PROTOCOL.sshsig; the
// cryptography is Go's crypto/ed25519 and crypto/sha512.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

const (
	sigBegin = "-----BEGIN SSH SIGNATURE-----"
	sigEnd   = "-----END SSH SIGNATURE-----"
)

type sshReader struct{ b []byte }

func (r *sshReader) str() ([]byte, error) {
	if len(r.b) < 4 {
		return nil, errors.New("truncated")
	}
	n := binary.BigEndian.Uint32(r.b)
	if uint64(n) > uint64(len(r.b)-4) {
		return nil, errors.New("truncated")
	}
	s := r.b[4 : 4+n]
	r.b = r.b[4+n:]
	return s, nil
}

func sshString(b []byte) []byte {
	out := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(out, uint32(len(b)))
	copy(out[4:], b)
	return out
}

// parseAllowedKey reads "ssh-ed25519 BASE64 [comment]" into the key's wire blob.
func parseAllowedKey(text string) ([]byte, error) {
	fields := strings.Fields(text)
	if len(fields) < 2 || fields[0] != "ssh-ed25519" {
		return nil, errors.New(`the signing key must be "ssh-ed25519 AAAA..."`)
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return nil, errors.New("the signing key is not base64")
	}
	r := &sshReader{blob}
	algo, err1 := r.str()
	key, err2 := r.str()
	if err1 != nil || err2 != nil || string(algo) != "ssh-ed25519" || len(key) != ed25519.PublicKeySize || len(r.b) != 0 {
		return nil, errors.New("the signing key is not an Ed25519 public key")
	}
	return blob, nil
}

// verifySSHSig checks an armored SSH signature over message, made in namespace "git" by
// the allowed key (its wire blob).
func verifySSHSig(armored string, message []byte, allowed []byte) error {
	text := strings.TrimSpace(armored)
	if !strings.HasPrefix(text, sigBegin) || !strings.HasSuffix(text, sigEnd) {
		if strings.Contains(text, "BEGIN PGP SIGNATURE") {
			return errors.New("signed with OpenPGP; this device accepts SSH signatures only")
		}
		return errors.New("not an SSH signature")
	}
	body := strings.Join(strings.Fields(text[len(sigBegin):len(text)-len(sigEnd)]), "")
	blob, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return errors.New("signature is not base64")
	}
	if len(blob) < 10 || string(blob[:6]) != "SSHSIG" || binary.BigEndian.Uint32(blob[6:10]) != 1 {
		return errors.New("not an SSHSIG version 1 signature")
	}
	r := &sshReader{blob[10:]}
	pub, err := r.str()
	if err != nil {
		return errors.New("malformed signature")
	}
	namespace, err := r.str()
	if err != nil {
		return errors.New("malformed signature")
	}
	reserved, err := r.str()
	if err != nil {
		return errors.New("malformed signature")
	}
	hashAlg, err := r.str()
	if err != nil {
		return errors.New("malformed signature")
	}
	sigBlob, err := r.str()
	if err != nil {
		return errors.New("malformed signature")
	}
	if !bytes.Equal(pub, allowed) {
		return errors.New("signed by a key this device does not allow")
	}
	if string(namespace) != "git" {
		return fmt.Errorf("signature namespace %q is not git", namespace)
	}
	var digest []byte
	switch string(hashAlg) {
	case "sha512":
		d := sha512.Sum512(message)
		digest = d[:]
	case "sha256":
		d := sha256.Sum256(message)
		digest = d[:]
	default:
		return fmt.Errorf("signature hash %q", hashAlg)
	}
	sr := &sshReader{sigBlob}
	algo, err1 := sr.str()
	sig, err2 := sr.str()
	if err1 != nil || err2 != nil || string(algo) != "ssh-ed25519" || len(sig) != ed25519.SignatureSize {
		return errors.New("not an Ed25519 signature")
	}
	kr := &sshReader{pub}
	_, _ = kr.str()
	key, _ := kr.str()
	var signed bytes.Buffer
	signed.WriteString("SSHSIG")
	signed.Write(sshString(namespace))
	signed.Write(sshString(reserved))
	signed.Write(sshString(hashAlg))
	signed.Write(sshString(digest))
	if !ed25519.Verify(ed25519.PublicKey(key), signed.Bytes(), sig) {
		return errors.New("bad signature")
	}
	return nil
}
