// content-sync: keeps an appliance's content trees (a site, extra DNS records, mail aliases)
// in step with a branch of a git repository, the Irmin way: the device pulls, validates and
// switches atomically. One job: it never touches the sealed root or a service's own state.
//
//	content-sync run CONFIG_DIR        every CONFIG_DIR/*.conf, at start and every interval
//	content-sync once CONFIG_FILE      one pass over one tree (tests, benchmarks)
//	content-sync validate TREE CHECK.. the checks against a directory (tests)
//
// A configuration file holds KEY=VALUE lines: name, dir (state on /data), seed (the image's
// copy, served until the first sync), repo, branch, interval (seconds), signer (an
// "ssh-ed25519 ..." key: commits must be signed by it), check (repeatable).
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	defaultInterval = 300
	minInterval     = 5
	maxPack         = 256 << 20
)

type config struct {
	name     string
	dir      string
	seed     string
	repo     string
	branch   string
	interval time.Duration
	signer   string
	checks   []check
}

func loadConfig(file string) (*config, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c := &config{branch: "main", interval: defaultInterval * time.Second}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: not KEY=VALUE", file, n)
		}
		value = strings.TrimSpace(value)
		switch key {
		case "name":
			c.name = value
		case "dir":
			c.dir = value
		case "seed":
			c.seed = value
		case "repo":
			c.repo = value
		case "branch":
			if value != "" {
				c.branch = value
			}
		case "interval":
			if value == "" {
				continue
			}
			secs, err := strconv.Atoi(value)
			if err != nil || secs < minInterval {
				return nil, fmt.Errorf("%s:%d: interval must be a number of seconds >= %d", file, n, minInterval)
			}
			c.interval = time.Duration(secs) * time.Second
		case "signer":
			c.signer = value
		case "check":
			ck, err := parseCheck(value)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", file, n, err)
			}
			c.checks = append(c.checks, ck)
		default:
			return nil, fmt.Errorf("%s:%d: unknown key %q", file, n, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if c.name == "" || c.dir == "" {
		return nil, fmt.Errorf("%s: name and dir are required", file)
	}
	return c, nil
}

// The state of one tree, kept in memory and written to DIR/status after every pass.
type state struct {
	current   string // applied commit id, "image" for the seed
	subject   string
	lastCheck time.Time
	result    string
	rejected  map[string]string // commit id -> why
}

type syncer struct {
	cfg   *config
	st    state
	log   func(string)
	mu    sync.Mutex
	retry bool
}

func newSyncer(cfg *config) *syncer {
	s := &syncer{cfg: cfg, st: state{rejected: map[string]string{}}}
	s.log = func(msg string) { fmt.Printf("content: %s: %s\n", cfg.name, msg) }
	return s
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// start makes sure `current` exists: the last applied tree survives a reboot on /data; on
// the first boot it points at the image's seed.
func (s *syncer) start() error {
	if err := os.MkdirAll(filepath.Join(s.cfg.dir, "trees"), 0o755); err != nil {
		return err
	}
	cur := filepath.Join(s.cfg.dir, "current")
	target, err := os.Readlink(cur)
	if err == nil {
		if strings.HasPrefix(target, "trees/") {
			s.st.current = strings.TrimPrefix(target, "trees/")
		} else {
			s.st.current = "image"
		}
		s.readStatus()
		if _, err := os.Stat(cur); err == nil {
			return nil
		}
	}
	if s.cfg.seed == "" {
		if err := os.MkdirAll(filepath.Join(s.cfg.dir, "trees", "empty"), 0o755); err != nil {
			return err
		}
		return flip(s.cfg.dir, "trees/empty")
	}
	s.st.current = "image"
	return flip(s.cfg.dir, s.cfg.seed)
}

// readStatus takes back the rejected commits of an earlier run (they are not fetched again).
func (s *syncer) readStatus() {
	data, err := os.ReadFile(filepath.Join(s.cfg.dir, "status"))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := cutPrefix(line, "rejected="); ok {
			id, why, _ := strings.Cut(rest, " ")
			s.st.rejected[id] = why
		}
		if rest, ok := cutPrefix(line, "subject="); ok {
			s.st.subject = rest
		}
	}
}

// flip points DIR/current at target in one rename: a reader sees the old tree or the new
// one, never a mix.
func flip(dir, target string) error {
	tmp := filepath.Join(dir, "current.new")
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "current")); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *syncer) writeStatus() {
	var b strings.Builder
	fmt.Fprintf(&b, "name=%s\n", s.cfg.name)
	fmt.Fprintf(&b, "commit=%s\n", s.st.current)
	fmt.Fprintf(&b, "subject=%s\n", s.st.subject)
	fmt.Fprintf(&b, "last_check=%d\n", s.st.lastCheck.Unix())
	fmt.Fprintf(&b, "last_result=%s\n", s.st.result)
	ids := make([]string, 0, len(s.st.rejected))
	for id := range s.st.rejected {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "rejected=%s %s\n", id, s.st.rejected[id])
	}
	tmp := filepath.Join(s.cfg.dir, "status.new")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err == nil {
		_ = os.Rename(tmp, filepath.Join(s.cfg.dir, "status"))
	}
}

// pass: one look at the repository. Errors leave the content as it is.
func (s *syncer) pass(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.lastCheck = time.Now()
	defer s.writeStatus()
	if s.cfg.repo == "" {
		s.st.result = "no repository set: serving the image's content"
		return
	}
	r, err := newRemote(s.cfg.repo, 60*time.Second, maxPack)
	if err != nil {
		s.st.result = "error: " + err.Error()
		s.log(s.st.result)
		return
	}
	ad, err := r.refs(ctx)
	if err != nil {
		s.unreachable(err)
		return
	}
	ref := "refs/heads/" + s.cfg.branch
	want, ok := ad.refs[ref]
	if !ok {
		s.st.result = fmt.Sprintf("error: the repository has no branch %s; serving %s", s.cfg.branch, short(s.st.current))
		s.log(s.st.result)
		return
	}
	if want == s.st.current {
		s.st.result = "unchanged"
		return
	}
	if why, bad := s.st.rejected[want]; bad {
		s.st.result = fmt.Sprintf("rejected %s (%s); serving %s", short(want), why, short(s.st.current))
		return
	}
	pack, err := r.fetch(ctx, ad, want)
	if err != nil {
		var u unreachableError
		if errors.As(err, &u) {
			s.unreachable(err)
			return
		}
		s.reject(want, err.Error())
		return
	}
	files, cm, err := s.verify(pack, want)
	if err != nil {
		s.reject(want, err.Error())
		return
	}
	if err := validate(files, s.cfg.checks); err != nil {
		s.reject(want, err.Error())
		return
	}
	if err := s.apply(want, files); err != nil {
		s.st.result = "error: cannot write the tree: " + err.Error()
		s.log(s.st.result)
		return
	}
	s.st.current = want
	s.st.subject = cm.subject
	s.st.result = "applied"
	s.log(fmt.Sprintf("applied %s (%s) in %.1fs", short(want), cm.subject, time.Since(s.st.lastCheck).Seconds()))
}

func (s *syncer) unreachable(err error) {
	s.st.result = fmt.Sprintf("unreachable: %v; serving %s", redactErr(err, s.cfg.repo), short(s.st.current))
	s.log(s.st.result)
}

func redactErr(err error, repo string) string {
	return strings.ReplaceAll(err.Error(), strings.TrimRight(repo, "/"), redact(repo))
}

func (s *syncer) reject(id, why string) {
	why = strings.ReplaceAll(why, "\n", " ")
	s.st.rejected[id] = why
	s.st.result = fmt.Sprintf("rejected %s (%s); serving %s", short(id), why, short(s.st.current))
	s.log(s.st.result)
}

type commitInfo struct{ subject string }

func (s *syncer) verify(pack []byte, want string) ([]file, commitInfo, error) {
	objects, err := parsePack(pack)
	if err != nil {
		return nil, commitInfo{}, fmt.Errorf("bad pack: %v", err)
	}
	o, ok := objects[want]
	if !ok || o.typ != objCommit {
		return nil, commitInfo{}, errors.New("the pack does not hold the advertised commit")
	}
	c, err := parseCommit(want, o.data)
	if err != nil {
		return nil, commitInfo{}, err
	}
	if s.cfg.signer != "" {
		key, err := parseAllowedKey(s.cfg.signer)
		if err != nil {
			return nil, commitInfo{}, err
		}
		if c.signature == "" {
			return nil, commitInfo{}, errors.New("the commit is not signed")
		}
		if err := verifySSHSig(c.signature, c.payload, key); err != nil {
			return nil, commitInfo{}, fmt.Errorf("signature: %v", err)
		}
	}
	files, _, err := checkout(objects, c.tree)
	if err != nil {
		return nil, commitInfo{}, err
	}
	return files, commitInfo{c.subject}, nil
}

// apply writes the tree beside the old one, then flips `current`; the old tree stays until
// the next apply (requests in flight may still read it), older ones are removed.
func (s *syncer) apply(id string, files []file) error {
	trees := filepath.Join(s.cfg.dir, "trees")
	partial := filepath.Join(trees, id+".partial")
	if err := os.RemoveAll(partial); err != nil {
		return err
	}
	if err := os.MkdirAll(partial, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		dest := filepath.Join(partial, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return err
		}
		if err := writeSynced(dest, f.data); err != nil {
			return err
		}
	}
	final := filepath.Join(trees, id)
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(partial, final); err != nil {
		return err
	}
	if err := syncDir(trees); err != nil {
		return err
	}
	previous, _ := os.Readlink(filepath.Join(s.cfg.dir, "current"))
	if err := flip(s.cfg.dir, "trees/"+id); err != nil {
		return err
	}
	entries, _ := os.ReadDir(trees)
	for _, e := range entries {
		if e.Name() != id && "trees/"+e.Name() != previous {
			_ = os.RemoveAll(filepath.Join(trees, e.Name()))
		}
	}
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (s *syncer) loop(ctx context.Context) {
	for {
		s.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.interval):
		}
	}
}

func configs(dir string) ([]*config, error) {
	var out []*config
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".conf") {
			c, err := loadConfig(p)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: content-sync run CONFIG_DIR | once CONFIG_FILE | validate TREE CHECK...")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	ctx := context.Background()
	switch os.Args[1] {
	case "run":
		cfgs, err := configs(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "content:", err)
			os.Exit(2)
		}
		var wg sync.WaitGroup
		for _, c := range cfgs {
			s := newSyncer(c)
			if err := s.start(); err != nil {
				s.log("cannot set up " + c.dir + ": " + err.Error())
				continue
			}
			s.log(fmt.Sprintf("serving %s; repository %s branch %s every %s", short(s.st.current), redact(c.repo), c.branch, c.interval))
			wg.Add(1)
			go func() { defer wg.Done(); s.loop(ctx) }()
		}
		wg.Wait()
		// nothing to do (no trees could be set up): stay, so s6 does not restart us in a loop
		select {}
	case "once":
		c, err := loadConfig(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "content:", err)
			os.Exit(2)
		}
		s := newSyncer(c)
		if err := s.start(); err != nil {
			fmt.Fprintln(os.Stderr, "content:", err)
			os.Exit(1)
		}
		s.pass(ctx)
		fmt.Println(s.st.result)
		if s.st.result != "applied" && s.st.result != "unchanged" && !strings.HasPrefix(s.st.result, "no repository") {
			os.Exit(1)
		}
	case "validate":
		var checks []check
		for _, a := range os.Args[3:] {
			c, err := parseCheck(a)
			if err != nil {
				fmt.Fprintln(os.Stderr, "content:", err)
				os.Exit(2)
			}
			checks = append(checks, c)
		}
		files, err := readTree(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "content:", err)
			os.Exit(2)
		}
		if err := validate(files, checks); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("ok")
	default:
		usage()
	}
}

func readTree(root string) ([]file, error) {
	var files []file
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, file{filepath.ToSlash(rel), data})
		return nil
	})
	return files, err
}

// cutPrefix is strings.CutPrefix, which Go 1.19 does not have yet.
func cutPrefix(s, prefix string) (string, bool) {
	if strings.HasPrefix(s, prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
