package main

// The update, backup and certificate state of the appliance, read from the files the update
// agent, the backup agent and the ACME service keep, at every scrape (they are small, and a
// scrape then shows what is on disk now, not what was there at the last poll).
//
// Where those files are comes from the sources file, written at build time from the recipe
// (appliancekit/monitoring/__init__.py, sources_config): the agent knows no path of its own.
// A missing file gives no metric (nothing happened yet, or the image has no such part: a
// made-up 0 timestamp would fire BackupTooOld for a device that was never meant to back up).
// A file that is there but cannot be read or understood gives
// appliancekit_state_read_errors{source,path} 1, so the alert rules see it.

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Sources is the sources file (JSON).
type Sources struct {
	Update *struct {
		Status string `json:"status"` // the update agent's status.json (on /data)
		Slots  string `json:"slots"`  // /etc/appliancekit/slots.json: can this board switch slots
	} `json:"update"`
	Backups []struct {
		Target string `json:"target"`
		Status string `json:"status"` // the backup agent's KEY=VALUE status file
	} `json:"backups"`
	Certificates []struct {
		Name string `json:"name"`
		Path string `json:"path"` // PEM, one certificate or a chain
	} `json:"certificates"`
}

func loadSources(path string) (Sources, error) {
	var s Sources
	if path == "" {
		return s, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("%s: %v", path, err)
	}
	return s, nil
}

// updateStatus holds the fields of the update agent's Status (appliancekit/agent/updater/
// state.go) that are exported.
type updateStatus struct {
	Slot       string            `json:"slot"`
	Version    *int64            `json:"version"`
	Trial      bool              `json:"trial"`
	LastCheck  string            `json:"last_check"`
	LastResult string            `json:"last_result"`
	LastUpdate string            `json:"last_update"`
	Failed     []json.RawMessage `json:"failed"`
}

type slotsConfig struct {
	Mechanism    string `json:"mechanism"`
	Implemented  *bool  `json:"implemented"`
	RefuseReason string `json:"refuse_reason"`
}

// The update agent's last result is a sentence (agent.go: setResult); these are the ones
// that say a check or an update went wrong. Everything else is a check that went through
// ("up to date", "no release published", a release written, a trial committed...), except
// updateOff.
var updateFailed = regexp.MustCompile(`^(refused: |repository unreachable|cannot |rolled back: |release \d+ not written|trial of release \d+ failed)`)

const updateOff = "no update_url set"

// sample is one line of the exposition format.
type sample struct {
	name   string
	labels [][2]string
	value  float64
}

func (s sample) write(w io.Writer) {
	var b strings.Builder
	b.WriteString(s.name)
	if len(s.labels) > 0 {
		b.WriteByte('{')
		for i, l := range s.labels {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=%s", l[0], quote(l[1]))
		}
		b.WriteByte('}')
	}
	fmt.Fprintf(w, "%s %s\n", b.String(), strconv.FormatFloat(s.value, 'f', -1, 64))
}

// quote escapes a label value the way the text format wants: \\, \" and \n only (Go's %q
// would also escape non-ASCII, which Prometheus would then show escaped).
func quote(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `"`, `\"`)
	v = strings.ReplaceAll(v, "\n", `\n`)
	return `"` + v + `"`
}

// family is the HELP and TYPE of a metric name; every name below has one.
var family = map[string][2]string{
	"appliancekit_state_read_errors":                     {"gauge", "1 when a state file is there but cannot be read or understood (0: read, or absent)."},
	"appliancekit_update_info":                           {"gauge", "The release (build version) and slot running now, as labels; always 1."},
	"appliancekit_update_trial":                          {"gauge", "1 while the running release is on its trial boot (not committed yet)."},
	"appliancekit_update_enabled":                        {"gauge", "0 when the device has no update_url: the update agent does not check."},
	"appliancekit_update_last_check_timestamp_seconds":   {"gauge", "When the update agent last checked the repository (Unix time)."},
	"appliancekit_update_last_result_ok":                 {"gauge", "1 when the last check (or update) went through, 0 when it failed or was refused."},
	"appliancekit_update_last_success_timestamp_seconds": {"gauge", "When the last update committed on this device (Unix time)."},
	"appliancekit_update_failed_releases":                {"gauge", "Releases tried here that did not commit (never taken again)."},
	"appliancekit_update_supported":                      {"gauge", "0 when this board's slot switch is not implemented: updates are refused (reason label)."},
	"appliancekit_backup_enabled":                        {"gauge", "0 when the device has no backup_repository: no backup is taken."},
	"appliancekit_backup_last_attempt_timestamp_seconds": {"gauge", "When the last backup attempt ended (Unix time)."},
	"appliancekit_backup_last_result_ok":                 {"gauge", "1 when the last backup attempt succeeded, 0 when it failed."},
	"appliancekit_backup_last_success_timestamp_seconds": {"gauge", "End of the last successful backup of /data (Unix time)."},
	"appliancekit_backup_last_size_bytes":                {"gauge", "Bytes of /data the last successful snapshot covers."},
	"appliancekit_backup_last_added_bytes":               {"gauge", "Bytes the last successful backup sent to the repository."},
	"appliancekit_certificate_expiry_timestamp_seconds":  {"gauge", "notAfter of the certificate (the earliest in its chain) a service serves (Unix time)."},
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// readState reads one file: (nil, nil) when it is absent.
func readState(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

func parseTime(v string) (float64, error) {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return 0, err
	}
	return float64(t.Unix()), nil
}

// collect reads every source and returns its samples, read errors included.
func (s Sources) collect() []sample {
	var out []sample
	readErr := func(source, path string, err error) {
		out = append(out, sample{"appliancekit_state_read_errors", [][2]string{{"source", source}, {"path", path}}, b2f(err != nil)})
	}
	if u := s.Update; u != nil {
		if u.Status != "" {
			got, err := updateSamples(u.Status)
			readErr("update", u.Status, err)
			out = append(out, got...)
		}
		if u.Slots != "" {
			got, err := slotsSamples(u.Slots)
			readErr("update", u.Slots, err)
			out = append(out, got...)
		}
	}
	for _, b := range s.Backups {
		got, err := backupSamples(b.Target, b.Status)
		readErr("backup", b.Status, err)
		out = append(out, got...)
	}
	for _, c := range s.Certificates {
		got, err := certificateSamples(c.Name, c.Path)
		readErr("certificate", c.Path, err)
		out = append(out, got...)
	}
	return out
}

func updateSamples(path string) ([]sample, error) {
	data, err := readState(path)
	if data == nil || err != nil {
		return nil, err
	}
	var st updateStatus
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, err
	}
	if st.Version == nil || !validSlot(st.Slot) {
		return nil, fmt.Errorf("no release version or slot")
	}
	out := []sample{
		{"appliancekit_update_info", [][2]string{{"release", strconv.FormatInt(*st.Version, 10)}, {"slot", st.Slot}}, 1},
		{"appliancekit_update_trial", nil, b2f(st.Trial)},
		{"appliancekit_update_failed_releases", nil, float64(len(st.Failed))},
	}
	if st.LastCheck != "" {
		at, err := parseTime(st.LastCheck)
		if err != nil {
			return nil, err
		}
		out = append(out, sample{"appliancekit_update_last_check_timestamp_seconds", nil, at})
		off := strings.HasPrefix(st.LastResult, updateOff)
		out = append(out, sample{"appliancekit_update_enabled", nil, b2f(!off)})
		if !off {
			out = append(out, sample{"appliancekit_update_last_result_ok", nil, b2f(!updateFailed.MatchString(st.LastResult))})
		}
	}
	if st.LastUpdate != "" {
		at, err := parseTime(st.LastUpdate)
		if err != nil {
			return nil, err
		}
		out = append(out, sample{"appliancekit_update_last_success_timestamp_seconds", nil, at})
	}
	return out, nil
}

func validSlot(s string) bool { return s == "a" || s == "b" }

func slotsSamples(path string) ([]sample, error) {
	data, err := readState(path)
	if data == nil || err != nil {
		return nil, err
	}
	var sc slotsConfig
	if err := json.Unmarshal(data, &sc); err != nil {
		return nil, err
	}
	if sc.Implemented == nil {
		return nil, fmt.Errorf("no \"implemented\"")
	}
	labels := [][2]string{{"mechanism", sc.Mechanism}, {"reason", sc.RefuseReason}}
	return []sample{{"appliancekit_update_supported", labels, b2f(*sc.Implemented)}}, nil
}

// backupSamples reads the backup agent's status file (appliancekit/backup/status.py: KEY=VALUE
// lines, unknown keys ignored).
func backupSamples(target, path string) ([]sample, error) {
	data, err := readState(path)
	if data == nil || err != nil {
		return nil, err
	}
	values := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if _, seen := values[strings.TrimSpace(k)]; ok && !seen {
			values[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	label := [][2]string{{"target", target}}
	result := values["result"]
	if result != "ok" && result != "failed" && result != "off" {
		return nil, fmt.Errorf("result %q is not ok, failed or off", result)
	}
	out := []sample{{"appliancekit_backup_enabled", label, b2f(result != "off")}}
	if result == "off" {
		return out, nil
	}
	at, err := parseTime(values["time"])
	if err != nil {
		return nil, err
	}
	out = append(out,
		sample{"appliancekit_backup_last_attempt_timestamp_seconds", label, at},
		sample{"appliancekit_backup_last_result_ok", label, b2f(result == "ok")},
	)
	if last := values["last_success"]; last != "" && last != "never" {
		at, err := parseTime(last)
		if err != nil {
			return nil, err
		}
		out = append(out, sample{"appliancekit_backup_last_success_timestamp_seconds", label, at})
	}
	if result == "ok" {
		for _, kn := range [][2]string{{"bytes_total", "appliancekit_backup_last_size_bytes"}, {"bytes_added", "appliancekit_backup_last_added_bytes"}} {
			if n, err := strconv.ParseUint(values[kn[0]], 10, 64); err == nil {
				out = append(out, sample{kn[1], label, float64(n)})
			}
		}
	}
	return out, nil
}

// certificateSamples: the earliest notAfter of the PEM certificates in path (a chain
// expires with its first certificate to expire).
func certificateSamples(name, path string) ([]sample, error) {
	data, err := readState(path)
	if data == nil || err != nil {
		return nil, err
	}
	var earliest time.Time
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		if earliest.IsZero() || cert.NotAfter.Before(earliest) {
			earliest = cert.NotAfter
		}
	}
	if earliest.IsZero() {
		return nil, fmt.Errorf("no PEM certificate")
	}
	labels := [][2]string{{"certificate", name}, {"path", path}}
	return []sample{{"appliancekit_certificate_expiry_timestamp_seconds", labels, float64(earliest.Unix())}}, nil
}

// writeSamples writes samples grouped by name, each name once with its HELP and TYPE (the
// text format wants a name's samples together).
func writeSamples(w io.Writer, samples []sample) {
	var order []string
	byName := map[string][]sample{}
	for _, s := range samples {
		if _, ok := byName[s.name]; !ok {
			order = append(order, s.name)
		}
		byName[s.name] = append(byName[s.name], s)
	}
	for _, name := range order {
		f := family[name]
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, f[1], name, f[0])
		for _, s := range byName[name] {
			s.write(w)
		}
	}
}
