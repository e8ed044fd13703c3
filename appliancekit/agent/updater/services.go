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

// ServiceUptime returns whether the service is up and for how many seconds (s6 2.13 calls
// the seconds since the last up/down change "updownfor").
func ServiceUptime(svstat, dir string) (bool, int, error) {
	out, err := exec.Command(svstat, "-o", "up,updownfor", dir).Output()
	if err != nil {
		return false, 0, fmt.Errorf("s6-svstat %s: %v", filepath.Base(dir), err)
	}
	return ParseSvstat(string(out))
}

// ParseSvstat reads `s6-svstat -o up,updownfor` output ("true 42").
func ParseSvstat(out string) (bool, int, error) {
	fields := strings.Fields(out)
	if len(fields) != 2 {
		return false, 0, fmt.Errorf("unexpected s6-svstat output %q", out)
	}
	secs, err := strconv.Atoi(fields[1])
	if err != nil {
		return false, 0, fmt.Errorf("unexpected s6-svstat output %q", out)
	}
	return fields[0] == "true", secs, nil
}

// AllUp says whether every service has been up for at least `after` seconds; the reason
// otherwise.
func AllUp(cfg AgentConfig, after int) (bool, string) {
	for _, name := range cfg.Services {
		up, secs, err := ServiceUptime(cfg.SvStat, filepath.Join(cfg.ServiceDir, name))
		if err != nil {
			return false, err.Error()
		}
		if !up {
			return false, fmt.Sprintf("service %s is down", name)
		}
		if secs < after {
			return false, fmt.Sprintf("service %s up for %d s of %d", name, secs, after)
		}
	}
	return true, ""
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

// StopServices takes every service down and waits (at most 20 s) until it is.
func StopServices(cfg AgentConfig) {
	for _, name := range cfg.Services {
		dir := filepath.Join(cfg.ServiceDir, name)
		exec.Command(cfg.SvCtl, "-wD", "-T", "20000", "-d", dir).Run()
	}
}
