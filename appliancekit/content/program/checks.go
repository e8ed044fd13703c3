package main

// Validation of a content tree before it is applied. The recipe declares its checks as data
// (check=KIND:ARGUMENT lines of the program's configuration):
//   require:PATH  PATH is a file of the tree (homepage: index.html at the top)
//   zone:GLOB     every file matching GLOB (top level) is a DNS master file that parses
//   aliases:PATH  PATH, if present, is a Postfix virtual(5) alias table
// A tree that fails any check is not applied.

import (
	"fmt"
	"path"
	"strings"
)

type check struct {
	kind string
	arg  string
}

func parseCheck(text string) (check, error) {
	kind, arg, ok := strings.Cut(text, ":")
	if !ok || arg == "" {
		return check{}, fmt.Errorf("check %q is not KIND:ARGUMENT", text)
	}
	switch kind {
	case "require", "zone", "aliases":
	default:
		return check{}, fmt.Errorf("unknown check kind %q (require, zone, aliases)", kind)
	}
	if kind != "zone" && (strings.HasPrefix(arg, "/") || strings.Contains(arg, "..")) {
		return check{}, fmt.Errorf("check %q: the path must be relative to the tree", text)
	}
	if _, err := path.Match(arg, ""); err != nil {
		return check{}, fmt.Errorf("check %q: bad pattern", text)
	}
	return check{kind, arg}, nil
}

// validate returns the first problem of the tree, or nil.
func validate(files []file, checks []check) error {
	byPath := map[string][]byte{}
	for _, f := range files {
		byPath[f.path] = f.data
	}
	for _, c := range checks {
		switch c.kind {
		case "require":
			if _, ok := byPath[c.arg]; !ok {
				return fmt.Errorf("%s is missing (required at the top of the tree)", c.arg)
			}
		case "zone":
			for _, f := range files {
				if ok, _ := path.Match(c.arg, f.path); ok {
					if err := checkZone(f.path, string(f.data)); err != nil {
						return err
					}
				}
			}
		case "aliases":
			if data, ok := byPath[c.arg]; ok {
				if err := checkAliases(c.arg, string(data)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// ------------------------------------------------------------------ Postfix virtual(5)

func isAddressChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._+-=", r)
}

func checkLocalPart(s string) bool {
	if s == "" || len(s) > 64 || strings.HasPrefix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if !isAddressChar(r) {
			return false
		}
	}
	return true
}

func checkAddress(s string, pattern bool) bool {
	local, domain, at := strings.Cut(s, "@")
	if !at {
		return checkLocalPart(s) // a local name (or a key without domain)
	}
	if local == "" && !pattern {
		return false
	}
	if local != "" && !checkLocalPart(local) {
		return false
	}
	return checkDomainName(strings.TrimSuffix(domain, "."), false) == nil && strings.Contains(domain, ".")
}

// checkAliases: "ADDRESS DESTINATION[, DESTINATION...]" lines; a line starting with
// white space continues the previous one; '#' starts a comment line. Destinations are
// addresses only: no commands, files or :include: (those are aliases(5) features, refused).
func checkAliases(name, text string) error {
	type entry struct {
		line int
		text string
	}
	var entries []entry
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimRight(raw, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(entries) == 0 {
				return fmt.Errorf("%s:%d: a continuation line before any entry", name, i+1)
			}
			entries[len(entries)-1].text += " " + trimmed
			continue
		}
		entries = append(entries, entry{i + 1, trimmed})
	}
	seen := map[string]int{}
	for _, e := range entries {
		fields := strings.Fields(strings.ReplaceAll(e.text, ",", " , "))
		key := fields[0]
		if strings.HasSuffix(key, ":") {
			return fmt.Errorf("%s:%d: %q: virtual(5) tables have no ':' after the address", name, e.line, key)
		}
		if !checkAddress(key, true) {
			return fmt.Errorf("%s:%d: %q is not an address, @domain or local name", name, e.line, key)
		}
		if first, dup := seen[strings.ToLower(key)]; dup {
			return fmt.Errorf("%s:%d: %q is also on line %d", name, e.line, key, first)
		}
		seen[strings.ToLower(key)] = e.line
		dests := 0
		for _, d := range fields[1:] {
			if d == "," {
				continue
			}
			if strings.HasPrefix(d, "|") || strings.HasPrefix(d, "/") || strings.HasPrefix(d, ":include:") {
				return fmt.Errorf("%s:%d: %q: only addresses are allowed as destinations", name, e.line, d)
			}
			if !checkAddress(d, false) {
				return fmt.Errorf("%s:%d: %q is not an address", name, e.line, d)
			}
			dests++
		}
		if dests == 0 {
			return fmt.Errorf("%s:%d: %q has no destination", name, e.line, key)
		}
	}
	return nil
}
