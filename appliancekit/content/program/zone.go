package main

// A DNS master file (RFC 1035 section 5) parser, strict enough that a file it accepts is one
// PowerDNS's zone parser reads: $ORIGIN and $TTL, parentheses across lines, quoted strings,
// comments, owner inheritance, TTL and class in either order, and the rdata of the common
// record types checked field by field. $INCLUDE and $GENERATE are refused (one file, one
// zone). Running pdnsutil check-zone instead would put pdnsutil and a backend in the image.

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

type token struct {
	text   string
	quoted bool
}

var ttlRe = regexp.MustCompile(`^(?i)(\d+[smhdw]?)+$`)

func isTTL(s string) bool { return ttlRe.MatchString(s) }

func isClass(s string) bool {
	switch strings.ToUpper(s) {
	case "IN", "CH", "HS":
		return true
	}
	return false
}

// checkDomainName: labels of letters, digits, '-' and '_' ('*' alone as the first label
// when wildcard is set), 1-63 characters each, 253 in all.
func checkDomainName(name string, wildcard bool) error {
	if name == "" || name == "." {
		return nil
	}
	n := strings.TrimSuffix(name, ".")
	if len(n) > 253 {
		return errors.New("name longer than 253 characters")
	}
	for i, label := range strings.Split(n, ".") {
		if label == "" {
			return fmt.Errorf("empty label in %q", name)
		}
		if len(label) > 63 {
			return fmt.Errorf("label longer than 63 characters in %q", name)
		}
		if label == "*" && i == 0 && wildcard {
			continue
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("%q is not a domain name", name)
			}
		}
	}
	return nil
}

func uintIn(s string, max uint64) bool {
	v, err := strconv.ParseUint(s, 10, 64)
	return err == nil && v <= max
}

func isHex(s string) bool {
	if s == "" || len(s)%2 != 0 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

func nameField(s string) error {
	if s == "@" {
		return nil
	}
	return checkDomainName(s, false)
}

// rdata checks: the fields of each record type.
func checkRdata(typ string, f []token) error {
	need := func(n int) error {
		if len(f) != n {
			return fmt.Errorf("%s needs %d field(s), got %d", typ, n, len(f))
		}
		return nil
	}
	switch typ {
	case "A":
		if err := need(1); err != nil {
			return err
		}
		if ip := net.ParseIP(f[0].text); ip == nil || ip.To4() == nil || !strings.Contains(f[0].text, ".") {
			return fmt.Errorf("%q is not an IPv4 address", f[0].text)
		}
	case "AAAA":
		if err := need(1); err != nil {
			return err
		}
		if ip := net.ParseIP(f[0].text); ip == nil || !strings.Contains(f[0].text, ":") {
			return fmt.Errorf("%q is not an IPv6 address", f[0].text)
		}
	case "NS", "CNAME", "PTR", "DNAME":
		if err := need(1); err != nil {
			return err
		}
		return nameField(f[0].text)
	case "MX":
		if err := need(2); err != nil {
			return err
		}
		if !uintIn(f[0].text, 65535) {
			return fmt.Errorf("MX preference %q is not 0-65535", f[0].text)
		}
		return nameField(f[1].text)
	case "TXT", "SPF":
		if len(f) == 0 {
			return fmt.Errorf("%s needs at least one string", typ)
		}
		for _, t := range f {
			if len(t.text) > 255 {
				return errors.New("a TXT string is longer than 255 characters")
			}
		}
	case "SRV":
		if err := need(4); err != nil {
			return err
		}
		for _, x := range f[:3] {
			if !uintIn(x.text, 65535) {
				return fmt.Errorf("SRV field %q is not 0-65535", x.text)
			}
		}
		return nameField(f[3].text)
	case "SOA":
		if err := need(7); err != nil {
			return err
		}
		for _, x := range f[:2] {
			if err := nameField(x.text); err != nil {
				return err
			}
		}
		for _, x := range f[2:] {
			if !isTTL(x.text) {
				return fmt.Errorf("SOA field %q is not a number", x.text)
			}
		}
	case "CAA":
		if err := need(3); err != nil {
			return err
		}
		if !uintIn(f[0].text, 255) {
			return fmt.Errorf("CAA flags %q is not 0-255", f[0].text)
		}
		if !regexp.MustCompile(`^[A-Za-z0-9]+$`).MatchString(f[1].text) {
			return fmt.Errorf("CAA tag %q", f[1].text)
		}
	case "SSHFP":
		if err := need(3); err != nil {
			return err
		}
		if !uintIn(f[0].text, 255) || !uintIn(f[1].text, 255) || !isHex(f[2].text) {
			return errors.New("SSHFP is ALGORITHM TYPE HEX")
		}
	case "TLSA", "DS":
		if len(f) < 4 {
			return fmt.Errorf("%s needs 4 fields", typ)
		}
		for _, x := range f[:3] {
			if !uintIn(x.text, 65535) {
				return fmt.Errorf("%s field %q is not a number", typ, x.text)
			}
		}
		if !isHex(strings.Join(texts(f[3:]), "")) {
			return fmt.Errorf("%s digest is not hex", typ)
		}
	case "HTTPS", "SVCB":
		if len(f) < 2 || !uintIn(f[0].text, 65535) {
			return fmt.Errorf("%s is PRIORITY TARGET [PARAMS]", typ)
		}
		return nameField(f[1].text)
	default:
		return fmt.Errorf("record type %q is not one this device accepts", typ)
	}
	return nil
}

func texts(f []token) []string {
	out := make([]string, len(f))
	for i, t := range f {
		out[i] = t.text
	}
	return out
}

// tokenize splits the file into logical lines (parentheses joined), each with its first
// physical line number and whether it starts with white space (owner inherited).
type logicalLine struct {
	line     int
	indented bool
	tokens   []token
}

func tokenize(text string) ([]logicalLine, error) {
	var out []logicalLine
	var cur *logicalLine
	depth := 0
	lineNo := 1
	i := 0
	startLine := func() {
		if cur == nil {
			indented := i < len(text) && (text[i] == ' ' || text[i] == '\t')
			cur = &logicalLine{line: lineNo, indented: indented}
		}
	}
	flush := func() {
		if cur != nil && len(cur.tokens) > 0 {
			out = append(out, *cur)
		}
		cur = nil
	}
	startLine()
	for i < len(text) {
		c := text[i]
		switch {
		case c == '\n':
			lineNo++
			i++
			if depth == 0 {
				flush()
				startLine()
			}
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == ';':
			for i < len(text) && text[i] != '\n' {
				i++
			}
		case c == '(':
			depth++
			i++
		case c == ')':
			if depth == 0 {
				return nil, fmt.Errorf("line %d: ')' without '('", lineNo)
			}
			depth--
			i++
		case c == '"':
			j := i + 1
			var b strings.Builder
			for j < len(text) && text[j] != '"' {
				if text[j] == '\\' && j+1 < len(text) {
					b.WriteByte(text[j])
					j++
				}
				if text[j] == '\n' {
					return nil, fmt.Errorf("line %d: unterminated string", lineNo)
				}
				b.WriteByte(text[j])
				j++
			}
			if j >= len(text) {
				return nil, fmt.Errorf("line %d: unterminated string", lineNo)
			}
			cur.tokens = append(cur.tokens, token{b.String(), true})
			i = j + 1
		default:
			j := i
			for j < len(text) && !strings.ContainsRune(" \t\r\n;()\"", rune(text[j])) {
				j++
			}
			cur.tokens = append(cur.tokens, token{text[i:j], false})
			i = j
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("line %d: '(' never closed", lineNo)
	}
	flush()
	return out, nil
}

func checkZone(name, text string) error {
	lines, err := tokenize(text)
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	origin := ""
	haveOwner := false
	records := 0
	for _, l := range lines {
		fail := func(format string, a ...interface{}) error {
			return fmt.Errorf("%s:%d: %s", name, l.line, fmt.Sprintf(format, a...))
		}
		t := l.tokens
		if !l.indented && strings.HasPrefix(t[0].text, "$") && !t[0].quoted {
			switch strings.ToUpper(t[0].text) {
			case "$ORIGIN":
				if len(t) != 2 || !strings.HasSuffix(t[1].text, ".") {
					return fail("$ORIGIN needs one absolute name (ending in '.')")
				}
				if err := checkDomainName(t[1].text, false); err != nil {
					return fail("%v", err)
				}
				origin = t[1].text
			case "$TTL":
				if len(t) != 2 || !isTTL(t[1].text) {
					return fail("$TTL needs one TTL")
				}
			default:
				return fail("directive %s is not supported (one file, one zone)", t[0].text)
			}
			continue
		}
		if !l.indented {
			owner := t[0].text
			if owner == "@" {
				if origin == "" {
					return fail("'@' before any $ORIGIN")
				}
			} else if err := checkDomainName(owner, true); err != nil {
				return fail("owner: %v", err)
			}
			haveOwner = true
			t = t[1:]
		} else if !haveOwner {
			return fail("the first record has no owner name")
		}
		// [TTL] [CLASS] TYPE or [CLASS] [TTL] TYPE
		for k := 0; k < 2 && len(t) > 0; k++ {
			if isTTL(t[0].text) || isClass(t[0].text) {
				t = t[1:]
			}
		}
		if len(t) == 0 {
			return fail("no record type")
		}
		typ := strings.ToUpper(t[0].text)
		if err := checkRdata(typ, t[1:]); err != nil {
			return fail("%v", err)
		}
		records++
	}
	if records == 0 {
		return fmt.Errorf("%s: no records", name)
	}
	return nil
}
