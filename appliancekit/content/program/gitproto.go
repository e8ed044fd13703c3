package main

// The client half of git's smart HTTP protocol (version 0, stateless RPC), enough to fetch
// one branch's newest commit with depth 1: git http-backend, cgit, Gitea and the hosted
// forges all speak it. See gitprotocol-http(5) and gitprotocol-pack(5).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const userAgent = "appliancekit-content/1"

// A transport error: the repository could not be reached or answered nonsense. The content
// in place stays; the next interval tries again.
type unreachableError struct{ err error }

func (e unreachableError) Error() string { return e.err.Error() }

type remote struct {
	base     string // repository URL without a trailing slash
	client   *http.Client
	maxBytes int64
}

func newRemote(repo string, timeout time.Duration, maxBytes int64) (*remote, error) {
	u, err := url.Parse(repo)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("repository %q is not an http(s) URL", redact(repo))
	}
	return &remote{
		base:     strings.TrimRight(repo, "/"),
		client:   &http.Client{Timeout: timeout},
		maxBytes: maxBytes,
	}, nil
}

// redact drops the user:password part of a URL: it never reaches the console.
func redact(repo string) string {
	u, err := url.Parse(repo)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	return u.String()
}

func readPkt(r *bufio.Reader) ([]byte, bool, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, false, err
	}
	n, err := strconv.ParseUint(string(head[:]), 16, 16)
	if err != nil {
		return nil, false, fmt.Errorf("bad pkt-line length %q", head[:])
	}
	if n == 0 {
		return nil, true, nil // flush-pkt
	}
	if n < 4 {
		return nil, false, fmt.Errorf("bad pkt-line length %d", n)
	}
	buf := make([]byte, n-4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, false, err
	}
	return buf, false, nil
}

func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

type advertisement struct {
	refs map[string]string // ref name -> commit id
	caps map[string]bool
}

func (r *remote) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", r.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", userAgent)
	return r.client.Do(req)
}

// refs asks for the advertisement of upload-pack: every ref and the server's capabilities.
func (r *remote) refs(ctx context.Context) (*advertisement, error) {
	resp, err := r.get(ctx, "/info/refs?service=git-upload-pack")
	if err != nil {
		return nil, unreachableError{err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, unreachableError{fmt.Errorf("info/refs: HTTP %d", resp.StatusCode)}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-git-upload-pack-advertisement" {
		return nil, unreachableError{fmt.Errorf("info/refs: not a smart HTTP server (Content-Type %q)", ct)}
	}
	br := bufio.NewReader(io.LimitReader(resp.Body, 16<<20))
	first, _, err := readPkt(br)
	if err != nil || !bytes.HasPrefix(first, []byte("# service=git-upload-pack")) {
		return nil, unreachableError{errors.New("info/refs: no service line")}
	}
	if _, flush, err := readPkt(br); err != nil || !flush {
		return nil, unreachableError{errors.New("info/refs: no flush after the service line")}
	}
	ad := &advertisement{refs: map[string]string{}, caps: map[string]bool{}}
	for i := 0; ; i++ {
		line, flush, err := readPkt(br)
		if err != nil {
			return nil, unreachableError{fmt.Errorf("info/refs: %v", err)}
		}
		if flush {
			break
		}
		text := strings.TrimSuffix(string(line), "\n")
		if i == 0 {
			if nul := strings.IndexByte(text, 0); nul >= 0 {
				for _, c := range strings.Fields(text[nul+1:]) {
					ad.caps[strings.SplitN(c, "=", 2)[0]] = true
				}
				text = text[:nul]
			}
		}
		parts := strings.SplitN(text, " ", 2)
		if len(parts) != 2 || len(parts[0]) != 40 {
			return nil, unreachableError{fmt.Errorf("info/refs: bad ref line %q", text)}
		}
		ad.refs[parts[1]] = parts[0]
	}
	return ad, nil
}

// fetch asks upload-pack for the pack of one commit (depth 1 where the server allows it)
// and returns the raw pack bytes.
func (r *remote) fetch(ctx context.Context, ad *advertisement, want string) ([]byte, error) {
	caps := []string{}
	for _, c := range []string{"side-band-64k", "ofs-delta", "no-progress"} {
		if ad.caps[c] {
			caps = append(caps, c)
		}
	}
	caps = append(caps, "agent="+userAgent)
	var body strings.Builder
	body.WriteString(pkt(fmt.Sprintf("want %s %s\n", want, strings.Join(caps, " "))))
	shallow := ad.caps["shallow"]
	if shallow {
		body.WriteString(pkt("deepen 1\n"))
	}
	body.WriteString("0000")
	body.WriteString(pkt("done\n"))
	req, err := http.NewRequestWithContext(ctx, "POST", r.base+"/git-upload-pack", strings.NewReader(body.String()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
	req.Header.Set("Accept", "application/x-git-upload-pack-result")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, unreachableError{err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, unreachableError{fmt.Errorf("git-upload-pack: HTTP %d", resp.StatusCode)}
	}
	br := bufio.NewReader(io.LimitReader(resp.Body, r.maxBytes+(1<<20)))
	sideband := ad.caps["side-band-64k"]
	// shallow-update section (only when deepening), then NAK, then the pack
preamble:
	for {
		line, flush, err := readPkt(br)
		if err != nil {
			return nil, unreachableError{fmt.Errorf("git-upload-pack: %v", err)}
		}
		if flush {
			continue
		}
		text := string(line)
		switch {
		case strings.HasPrefix(text, "shallow "), strings.HasPrefix(text, "unshallow "):
			continue
		case strings.HasPrefix(text, "NAK"), strings.HasPrefix(text, "ACK"):
			break preamble
		case strings.HasPrefix(text, "ERR "):
			return nil, fmt.Errorf("server: %s", strings.TrimSpace(text[4:]))
		default:
			return nil, unreachableError{fmt.Errorf("git-upload-pack: unexpected %q", truncate(text, 60))}
		}
	}
	var pack bytes.Buffer
	if !sideband {
		if _, err := io.Copy(&pack, br); err != nil {
			return nil, unreachableError{err}
		}
	} else {
		for {
			line, flush, err := readPkt(br)
			if err == io.EOF || flush {
				break
			}
			if err != nil {
				return nil, unreachableError{fmt.Errorf("git-upload-pack: %v", err)}
			}
			if len(line) == 0 {
				continue
			}
			switch line[0] {
			case 1:
				pack.Write(line[1:])
			case 2: // progress
			case 3:
				return nil, fmt.Errorf("server: %s", strings.TrimSpace(string(line[1:])))
			}
			if int64(pack.Len()) > r.maxBytes {
				break
			}
		}
	}
	if int64(pack.Len()) > r.maxBytes {
		return nil, fmt.Errorf("the pack is larger than %d MiB", r.maxBytes>>20)
	}
	return pack.Bytes(), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
