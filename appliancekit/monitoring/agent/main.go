// ak-monitor: the monitoring agent of an appliance (built by appliancekit, no shell needed).
//
// It is the only monitoring listener reachable from outside. Behind a bearer token it serves
// /metrics: node-exporter's metrics (fetched from its loopback-only listener) followed by the
// supervision state of every s6 service, read from s6-supervise's status files:
//
//	appliancekit_service_up{service}             1 while the service runs
//	appliancekit_service_wanted_up{service}      0 when an administrator took it down
//	appliancekit_service_restarts_total{service} starts seen after the first one the agent saw
//	appliancekit_service_state_seconds{service}  seconds since it last started or stopped
//
// and the update, backup and certificate state, from the files named in the sources file
// (state.go: appliancekit_update_*, appliancekit_backup_*, appliancekit_certificate_*).
//
// With a second token (off unless the device has one) it also takes services down, up, or
// kills them, through s6-supervise's control fifo: what an administrator (or a test) does to
// a service on a device that has no shell to log in to.
package main

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// s6-supervise's status file: stamp (12) readystamp (12) pid (8) [pgid (8), s6 >= 2.12]
// wstat (2) flags (1); flags: paused 1, finishing 2, want up 4, ready 8.
const (
	statusOld = 35
	statusNew = 43
)

type service struct {
	up      bool
	wantUp  bool
	pid     uint64
	changed time.Time
	starts  uint64
	lastPid uint64
}

type agent struct {
	scanDir string
	mu      sync.Mutex
	svcs    map[string]*service
}

func readStatus(path string) (pid uint64, flags byte, changed time.Time, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	info, err := os.Stat(path)
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	switch len(data) {
	case statusOld, statusNew:
		pid = binary.BigEndian.Uint64(data[24:32])
		flags = data[len(data)-1]
	default:
		return 0, 0, time.Time{}, fmt.Errorf("%s: %d bytes, not an s6 status file", path, len(data))
	}
	// s6 rewrites the file at every state change: its mtime is the change's time in the
	// system clock (the stamp inside is TAI, whose offset depends on how skalibs was built)
	return pid, flags, info.ModTime(), nil
}

func (a *agent) poll() {
	entries, err := os.ReadDir(a.scanDir)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !e.IsDir() {
			continue
		}
		pid, flags, changed, err := readStatus(filepath.Join(a.scanDir, name, "supervise", "status"))
		if err != nil {
			continue
		}
		s := a.svcs[name]
		if s == nil {
			s = &service{}
			a.svcs[name] = s
		}
		finishing := flags&2 != 0
		s.up = pid != 0 && !finishing
		s.wantUp = flags&4 != 0
		s.changed = changed
		// a start is counted once the service has been seen running: a service that is
		// still coming up when the agent first looks (at boot, both start together) has
		// not restarted
		if s.up && pid != s.lastPid {
			if s.lastPid != 0 {
				s.starts++
			}
			s.lastPid = pid
		}
	}
}

func (a *agent) metrics(w io.Writer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	names := make([]string, 0, len(a.svcs))
	for n := range a.svcs {
		names = append(names, n)
	}
	sort.Strings(names)
	now := time.Now()
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	fmt.Fprintln(w, "# HELP appliancekit_service_up Whether the s6 service runs (1) or not (0).")
	fmt.Fprintln(w, "# TYPE appliancekit_service_up gauge")
	for _, n := range names {
		fmt.Fprintf(w, "appliancekit_service_up{service=%q} %d\n", n, b(a.svcs[n].up))
	}
	fmt.Fprintln(w, "# HELP appliancekit_service_wanted_up Whether s6 is to keep the service up (0: taken down on purpose).")
	fmt.Fprintln(w, "# TYPE appliancekit_service_wanted_up gauge")
	for _, n := range names {
		fmt.Fprintf(w, "appliancekit_service_wanted_up{service=%q} %d\n", n, b(a.svcs[n].wantUp))
	}
	fmt.Fprintln(w, "# HELP appliancekit_service_restarts_total Starts of the service after the first one the agent saw running.")
	fmt.Fprintln(w, "# TYPE appliancekit_service_restarts_total counter")
	for _, n := range names {
		fmt.Fprintf(w, "appliancekit_service_restarts_total{service=%q} %d\n", n, a.svcs[n].starts)
	}
	fmt.Fprintln(w, "# HELP appliancekit_service_state_seconds Seconds since the service last started (when up) or stopped (when down).")
	fmt.Fprintln(w, "# TYPE appliancekit_service_state_seconds gauge")
	for _, n := range names {
		fmt.Fprintf(w, "appliancekit_service_state_seconds{service=%q} %.3f\n", n, now.Sub(a.svcs[n].changed).Seconds())
	}
}

// cache holds node-exporter's latest answer.
type cache struct {
	mu   sync.Mutex
	body []byte
	at   time.Time
	max  time.Duration
}

func (c *cache) get() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.body == nil || time.Since(c.at) > c.max {
		return nil
	}
	return c.body
}

func (c *cache) follow(url string, every, maxAge time.Duration) {
	c.mu.Lock()
	c.max = maxAge
	c.mu.Unlock()
	client := &http.Client{Timeout: maxAge}
	for {
		start := time.Now()
		resp, err := client.Get(url)
		if err == nil {
			body, readErr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if readErr == nil && resp.StatusCode == http.StatusOK {
				c.mu.Lock()
				c.body, c.at = body, time.Now()
				c.mu.Unlock()
			}
		} else {
			log.Printf("ak-monitor: node-exporter: %v", err)
		}
		if wait := every - time.Since(start); wait > 0 {
			time.Sleep(wait)
		}
	}
}

func readToken(path string) []byte {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		log.Printf("ak-monitor: no token at %s (%v)", path, err)
		return nil
	}
	return bytes.TrimSpace(data)
}

// authorised: "Authorization: Bearer TOKEN" (what Prometheus sends with credentials_file).
func authorised(r *http.Request, token []byte) bool {
	if len(token) == 0 {
		return false
	}
	got := []byte(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	return subtle.ConstantTimeCompare(got, token) == 1
}

var controlPath = regexp.MustCompile(`^/v1/services/([a-z0-9][a-z0-9-]*)/(down|up|kill|restart)$`)

// s6-supervise control commands: d (SIGTERM, stay down), u (up), k (SIGKILL; restarted if
// wanted up), t (SIGTERM; restarted).
var commands = map[string]string{"down": "d", "up": "u", "kill": "k", "restart": "t"}

func main() {
	listen := flag.String("listen", ":9100", "address of the authenticated listener")
	upstream := flag.String("upstream", "http://127.0.0.1:9110/metrics", "node-exporter's metrics (loopback)")
	scanDir := flag.String("scan-dir", "/run/service", "s6-svscan's scan directory")
	tokenFile := flag.String("token-file", "", "file holding the scrape token")
	controlFile := flag.String("control-token-file", "", "file holding the control token (empty file: no control)")
	metricsDir := flag.String("metrics-dir", "", "directory for other services' textfile metrics (made at start)")
	interval := flag.Duration("interval", 500*time.Millisecond, "how often the status files are read (s6 restarts a service at most once a second)")
	upstreamEvery := flag.Duration("upstream-interval", 5*time.Second, "how often node-exporter is read")
	maxAge := flag.Duration("upstream-max-age", 2*time.Minute, "node-exporter's answer is served this long at most")
	sourcesFile := flag.String("sources", "", "JSON file naming the update, backup and certificate state files (empty: none)")
	flag.Parse()
	log.SetFlags(0)

	if *metricsDir != "" {
		// every service of the appliance may drop NAME.prom files here (written to a temp
		// name and renamed); sticky, so none can remove another's
		if err := os.MkdirAll(*metricsDir, 0o755); err != nil {
			log.Printf("ak-monitor: %v", err)
		}
		_ = os.Chmod(*metricsDir, 0o777|os.ModeSticky)
	}
	sources, err := loadSources(*sourcesFile)
	if err != nil {
		// the supervision metrics are still worth serving; the state ones need the file
		log.Printf("ak-monitor: no update, backup or certificate metrics: %v", err)
	}
	token := readToken(*tokenFile)
	control := readToken(*controlFile)
	if len(token) == 0 {
		log.Printf("ak-monitor: no scrape token set (per-device setting monitoring_token): /metrics refuses every request")
	}
	a := &agent{scanDir: *scanDir, svcs: map[string]*service{}}
	a.poll()
	go func() {
		for range time.Tick(*interval) {
			a.poll()
		}
	}()
	// node-exporter is read in the background and its latest answer served: one read can take
	// longer than Prometheus's scrape timeout on a slow or emulated board, and the agent's own
	// supervision metrics must arrive either way. An answer older than maxAge is dropped.
	latest := &cache{}
	go latest.follow(*upstream, *upstreamEvery, *maxAge)

	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if !authorised(r, token) {
			http.Error(w, "unauthorised", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if body := latest.get(); body != nil {
			_, _ = w.Write(body)
		}
		a.metrics(w)
		writeSamples(w, sources.collect())
	})
	mux.HandleFunc("/v1/services/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		if !authorised(r, control) {
			http.Error(w, "unauthorised", http.StatusUnauthorized)
			return
		}
		m := controlPath.FindStringSubmatch(r.URL.Path)
		if m == nil {
			http.NotFound(w, r)
			return
		}
		fifo := filepath.Join(*scanDir, m[1], "supervise", "control")
		f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			http.Error(w, "no such service", http.StatusNotFound)
			return
		}
		_, err = f.WriteString(commands[m[2]])
		f.Close()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		log.Printf("ak-monitor: %s %s", m[2], m[1])
		fmt.Fprintf(w, "%s %s\n", m[2], m[1])
	})
	server := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(server.ListenAndServe())
}
