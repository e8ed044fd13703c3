package main

// The services: how long each has been up (s6-svstat), the recipe's local health checks,
// and stopping them before the slot switch (s6-svc).

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ServiceUptime returns whether the service is up, for how many seconds (s6 2.13 calls the
// seconds since the last up/down change "updownfor"), and its process id (-1 when down).
func ServiceUptime(svstat, dir string) (ServiceState, error) {
	out, err := exec.Command(svstat, "-o", "up,updownfor,pid", dir).Output()
	if err != nil {
		return ServiceState{}, fmt.Errorf("s6-svstat %s: %v", filepath.Base(dir), err)
	}
	st, err := ParseSvstat(string(out))
	st.Name = filepath.Base(dir)
	return st, err
}

// ParseSvstat reads `s6-svstat -o up,updownfor,pid` output ("true 42 123", "false 3 -1").
func ParseSvstat(out string) (ServiceState, error) {
	fields := strings.Fields(out)
	if len(fields) != 3 {
		return ServiceState{}, fmt.Errorf("unexpected s6-svstat output %q", out)
	}
	secs, err := strconv.Atoi(fields[1])
	if err != nil {
		return ServiceState{}, fmt.Errorf("unexpected s6-svstat output %q", out)
	}
	pid, err := strconv.Atoi(fields[2])
	if err != nil {
		return ServiceState{}, fmt.Errorf("unexpected s6-svstat output %q", out)
	}
	return ServiceState{Up: fields[0] == "true", Secs: secs, Pid: pid}, nil
}

// ServiceState is one service as one s6-svstat call saw it.
type ServiceState struct {
	Name string
	Up   bool
	Secs int // seconds since its last up/down change
	Pid  int // its process while up; -1 while down
}

// ServiceStates asks s6-svstat about every service.
func ServiceStates(cfg AgentConfig) ([]ServiceState, error) {
	var out []ServiceState
	for _, name := range cfg.Services {
		st, err := ServiceUptime(cfg.SvStat, filepath.Join(cfg.ServiceDir, name))
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// AllUp says whether every service has been up for at least `after` seconds; the reason
// otherwise.
func AllUp(states []ServiceState, after int) (bool, string) {
	for _, s := range states {
		if !s.Up {
			return false, fmt.Sprintf("service %s is down", s.Name)
		}
		if s.Secs < after {
			return false, fmt.Sprintf("service %s up for %d s of %d", s.Name, s.Secs, after)
		}
	}
	return true, ""
}

// CrashWatch tells a service that keeps failing at start from one that is starting. s6 has
// no "starting" state: a service seen down has exited, and one seen up under another
// process than at the previous poll (or up after being seen down) has exited and been
// started again in between. Either, at `Polls` polls running, is a crash loop. Counting
// only the polls that see it down is not enough: s6 restarts a service that dies within a
// second, one second later, so a crash loop (nginx refusing its configuration) is seen up
// about half the time, and the trial waited for luck or its deadline.
type CrashWatch struct {
	Polls int
	last  map[string]int // each service's process at the previous poll (-1: down)
	bad   map[string]int // polls running at which it was down or had restarted
}

// Observe takes one poll's states; returns the reason once a service has been down or
// restarted at `Polls` polls running, else "".
func (w *CrashWatch) Observe(states []ServiceState) string {
	if w.bad == nil {
		w.bad, w.last = map[string]int{}, map[string]int{}
	}
	for _, s := range states {
		pid := s.Pid
		if !s.Up {
			pid = -1
		}
		before, seen := w.last[s.Name]
		w.last[s.Name] = pid
		restarted := s.Up && seen && before != pid
		if !s.Up || restarted {
			w.bad[s.Name]++
		} else {
			w.bad[s.Name] = 0
		}
		if w.bad[s.Name] >= w.Polls {
			what := "is down"
			if restarted {
				what = "was started again"
			}
			return fmt.Sprintf("service %s %s, and was down or restarted at %d polls running (crashing at start)", s.Name, what, w.Polls)
		}
	}
	return ""
}

// Healthy runs the local health checks once.
func Healthy(probes []Probe) (bool, string) {
	client := &http.Client{Timeout: 5 * time.Second}
	for _, p := range probes {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port))
		switch p.Kind {
		case "http":
			path := p.Path
			if path == "" {
				path = "/"
			}
			resp, err := client.Get("http://" + addr + path)
			if err != nil {
				return false, fmt.Sprintf("health %s: %v", p.Name, err)
			}
			resp.Body.Close()
			want := p.Status
			if want == 0 {
				want = 200
			}
			if resp.StatusCode != want {
				return false, fmt.Sprintf("health %s: HTTP %d, want %d", p.Name, resp.StatusCode, want)
			}
		case "tcp":
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return false, fmt.Sprintf("health %s: %v", p.Name, err)
			}
			conn.Close()
		}
	}
	return true, ""
}

// StopServices takes every service down and waits (at most 20 s) until it is. Last listed
// first: the backup agent, which starts the others (`s6-svc -u`), comes last in the list
// (backup/agent.py), and stopped first it cannot start one already stopped again. s6-svc
// waits through s6-svlisten1 and s6-ftrigrd (agent/install.py keeps them); a failure is said, as
// data copied or moved under a running service may be inconsistent.
func StopServices(cfg AgentConfig) {
	for i := len(cfg.Services) - 1; i >= 0; i-- {
		dir := filepath.Join(cfg.ServiceDir, cfg.Services[i])
		out, err := exec.Command(cfg.SvCtl, "-wD", "-T", "20000", "-d", dir).CombinedOutput()
		if err != nil {
			logf("stopping service %s: %v %s", cfg.Services[i], err, strings.TrimSpace(string(out)))
		}
	}
}

// WantedUp lists the services s6 means to have up (s6-svstat's "wantedup"): those started
// at boot, or by the backup agent, and not taken down since. A service built `down` and
// not started yet is not wanted up; whatever starts it (the backup agent) still will.
func WantedUp(cfg AgentConfig) []string {
	var out []string
	for _, name := range cfg.Services {
		o, err := exec.Command(cfg.SvStat, "-o", "wantedup", filepath.Join(cfg.ServiceDir, name)).Output()
		if err == nil && strings.TrimSpace(string(o)) == "true" {
			out = append(out, name)
		}
	}
	return out
}
