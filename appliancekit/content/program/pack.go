package main

// Pack files (gitformat-pack(5)): objects, OFS/REF deltas, and the trailing checksum. Every
// object is named by the SHA-1 of its own bytes, so a commit fetched by id pins its whole
// tree: a server cannot swap a file without changing the commit id it advertised.

import (
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

const (
	objCommit   = 1
	objTree     = 2
	objBlob     = 3
	objTag      = 4
	objOfsDelta = 6
	objRefDelta = 7
)

var typeNames = map[int]string{objCommit: "commit", objTree: "tree", objBlob: "blob", objTag: "tag"}

type object struct {
	typ  int
	data []byte
}

type rawEntry struct {
	typ  int
	data []byte // inflated: the object, or a delta
	base int64  // OFS_DELTA: offset of the base
	ref  string // REF_DELTA: id of the base
}

func objectID(typ int, data []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "%s %d\x00", typeNames[typ], len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// parsePack returns every object of the pack by id.
func parsePack(pack []byte) (map[string]object, error) {
	if len(pack) < 32 || string(pack[:4]) != "PACK" {
		return nil, errors.New("not a pack file")
	}
	sum := sha1.Sum(pack[:len(pack)-20])
	if !bytes.Equal(sum[:], pack[len(pack)-20:]) {
		return nil, errors.New("pack checksum mismatch")
	}
	version := be32(pack[4:8])
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("pack version %d", version)
	}
	count := int(be32(pack[8:12]))
	body := pack[:len(pack)-20]
	entries := map[int64]*rawEntry{}
	order := make([]int64, 0, count)
	pos := int64(12)
	for i := 0; i < count; i++ {
		start := pos
		if pos >= int64(len(body)) {
			return nil, errors.New("truncated pack")
		}
		c := body[pos]
		pos++
		typ := int(c>>4) & 7
		size := int64(c & 15)
		shift := uint(4)
		for c&0x80 != 0 {
			if pos >= int64(len(body)) || shift > 56 {
				return nil, errors.New("bad object header")
			}
			c = body[pos]
			pos++
			size |= int64(c&0x7f) << shift
			shift += 7
		}
		e := &rawEntry{typ: typ}
		switch typ {
		case objCommit, objTree, objBlob, objTag:
		case objOfsDelta:
			if pos >= int64(len(body)) {
				return nil, errors.New("truncated pack")
			}
			c = body[pos]
			pos++
			ofs := int64(c & 0x7f)
			for c&0x80 != 0 {
				if pos >= int64(len(body)) || ofs > 1<<48 {
					return nil, errors.New("bad delta offset")
				}
				c = body[pos]
				pos++
				ofs = ((ofs + 1) << 7) | int64(c&0x7f)
			}
			e.base = start - ofs
			if e.base < 12 || e.base >= start {
				return nil, errors.New("delta base outside the pack")
			}
		case objRefDelta:
			if pos+20 > int64(len(body)) {
				return nil, errors.New("truncated pack")
			}
			e.ref = hex.EncodeToString(body[pos : pos+20])
			pos += 20
		default:
			return nil, fmt.Errorf("unknown object type %d", typ)
		}
		r := bytes.NewReader(body[pos:])
		zr, err := zlib.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("object at %d: %v", start, err)
		}
		data, err := io.ReadAll(io.LimitReader(zr, size+1))
		if err != nil {
			return nil, fmt.Errorf("object at %d: %v", start, err)
		}
		if int64(len(data)) != size {
			return nil, fmt.Errorf("object at %d: %d bytes, header says %d", start, len(data), size)
		}
		// the zlib reader reads byte by byte from a ByteReader: what it left is the rest
		if err := zr.Close(); err != nil {
			return nil, err
		}
		pos = int64(len(body)) - int64(r.Len())
		e.data = data
		entries[start] = e
		order = append(order, start)
	}
	if pos != int64(len(body)) {
		return nil, errors.New("trailing bytes after the last object")
	}
	objects := map[string]object{}
	resolved := map[int64]object{}
	var resolve func(off int64, depth int) (object, error)
	resolve = func(off int64, depth int) (object, error) {
		if o, ok := resolved[off]; ok {
			return o, nil
		}
		if depth > 100 {
			return object{}, errors.New("delta chain too long")
		}
		e, ok := entries[off]
		if !ok {
			return object{}, errors.New("delta base is not an object start")
		}
		var o object
		switch e.typ {
		case objOfsDelta, objRefDelta:
			var base object
			var err error
			if e.typ == objOfsDelta {
				base, err = resolve(e.base, depth+1)
			} else {
				var found bool
				base, found = objects[e.ref]
				if !found {
					for _, other := range order {
						if other == off {
							continue
						}
						cand, err2 := resolve(other, depth+1)
						if err2 == nil && objectID(cand.typ, cand.data) == e.ref {
							base, found = cand, true
							break
						}
					}
				}
				if !found {
					err = fmt.Errorf("delta base %s is not in the pack (thin pack?)", e.ref)
				}
			}
			if err != nil {
				return object{}, err
			}
			data, err := applyDelta(base.data, e.data)
			if err != nil {
				return object{}, err
			}
			o = object{base.typ, data}
		default:
			o = object{e.typ, e.data}
		}
		resolved[off] = o
		objects[objectID(o.typ, o.data)] = o
		return o, nil
	}
	for _, off := range order {
		if _, err := resolve(off, 0); err != nil {
			return nil, err
		}
	}
	return objects, nil
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func deltaSize(d []byte, pos *int) (int, error) {
	size, shift := 0, uint(0)
	for {
		if *pos >= len(d) || shift > 56 {
			return 0, errors.New("bad delta header")
		}
		c := d[*pos]
		*pos++
		size |= int(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			return size, nil
		}
	}
}

func applyDelta(base, delta []byte) ([]byte, error) {
	pos := 0
	srcSize, err := deltaSize(delta, &pos)
	if err != nil {
		return nil, err
	}
	if srcSize != len(base) {
		return nil, errors.New("delta base size mismatch")
	}
	dstSize, err := deltaSize(delta, &pos)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, dstSize)
	for pos < len(delta) {
		op := delta[pos]
		pos++
		if op&0x80 != 0 {
			var off, n int
			for i := uint(0); i < 4; i++ {
				if op&(1<<i) != 0 {
					if pos >= len(delta) {
						return nil, errors.New("truncated delta")
					}
					off |= int(delta[pos]) << (8 * i)
					pos++
				}
			}
			for i := uint(0); i < 3; i++ {
				if op&(0x10<<i) != 0 {
					if pos >= len(delta) {
						return nil, errors.New("truncated delta")
					}
					n |= int(delta[pos]) << (8 * i)
					pos++
				}
			}
			if n == 0 {
				n = 0x10000
			}
			if off+n > len(base) || off < 0 {
				return nil, errors.New("delta copies outside its base")
			}
			out = append(out, base[off:off+n]...)
		} else if op != 0 {
			n := int(op)
			if pos+n > len(delta) {
				return nil, errors.New("truncated delta")
			}
			out = append(out, delta[pos:pos+n]...)
			pos += n
		} else {
			return nil, errors.New("delta opcode 0")
		}
	}
	if len(out) != dstSize {
		return nil, errors.New("delta result size mismatch")
	}
	return out, nil
}

type commit struct {
	id        string
	tree      string
	payload   []byte // the commit without its signature: what the signature covers
	signature string // the gpgsig header, continuation spaces removed ("" if unsigned)
	subject   string
}

func parseCommit(id string, data []byte) (*commit, error) {
	c := &commit{id: id}
	headerEnd := bytes.Index(data, []byte("\n\n"))
	if headerEnd < 0 {
		headerEnd = len(data)
	}
	lines := strings.Split(string(data[:headerEnd]), "\n")
	var payload bytes.Buffer
	var sig []string
	inSig := false
	for _, line := range lines {
		if inSig && strings.HasPrefix(line, " ") {
			sig = append(sig, line[1:])
			continue
		}
		inSig = false
		if strings.HasPrefix(line, "gpgsig ") {
			inSig = true
			sig = append(sig, line[len("gpgsig "):])
			continue
		}
		if strings.HasPrefix(line, "tree ") && c.tree == "" {
			c.tree = strings.TrimSpace(line[5:])
		}
		payload.WriteString(line)
		payload.WriteByte('\n')
	}
	if headerEnd < len(data) {
		payload.Write(data[headerEnd+1:])
		msg := strings.TrimLeft(string(data[headerEnd+2:]), "\n")
		c.subject = strings.SplitN(msg, "\n", 2)[0]
	}
	if len(c.tree) != 40 {
		return nil, errors.New("commit has no tree")
	}
	c.payload = payload.Bytes()
	if len(sig) > 0 {
		c.signature = strings.Join(sig, "\n") + "\n"
	}
	return c, nil
}

// A file of the checked-out tree.
type file struct {
	path string // relative, slash-separated
	data []byte
}

// checkout lists the files of a tree. Symlinks are refused (one could point a service at
// any file of the appliance); submodules are skipped.
func checkout(objects map[string]object, treeID string) ([]file, []string, error) {
	var files []file
	var dirs []string
	var walk func(id, prefix string, depth int) error
	walk = func(id, prefix string, depth int) error {
		if depth > 64 {
			return errors.New("tree nested too deep")
		}
		o, ok := objects[id]
		if !ok || o.typ != objTree {
			return fmt.Errorf("tree %s is missing from the pack", id)
		}
		data := o.data
		for len(data) > 0 {
			sp := bytes.IndexByte(data, ' ')
			nul := bytes.IndexByte(data, 0)
			if sp < 0 || nul < sp || nul+21 > len(data) {
				return errors.New("malformed tree")
			}
			mode := string(data[:sp])
			name := string(data[sp+1 : nul])
			child := hex.EncodeToString(data[nul+1 : nul+21])
			data = data[nul+21:]
			if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
				return fmt.Errorf("bad file name %q", name)
			}
			p := path.Join(prefix, name)
			switch mode {
			case "40000":
				dirs = append(dirs, p)
				if err := walk(child, p, depth+1); err != nil {
					return err
				}
			case "100644", "100755", "100664":
				b, ok := objects[child]
				if !ok || b.typ != objBlob {
					return fmt.Errorf("%s: blob missing from the pack", p)
				}
				files = append(files, file{p, b.data})
			case "120000":
				return fmt.Errorf("%s is a symbolic link: content trees hold only files", p)
			case "160000":
				// a submodule: not fetched
			default:
				return fmt.Errorf("%s: unknown mode %s", p, mode)
			}
		}
		return nil
	}
	if err := walk(treeID, "", 0); err != nil {
		return nil, nil, err
	}
	return files, dirs, nil
}
