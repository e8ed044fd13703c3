package main

// Plain files over HTTP(S) from the deploy repository's tree: whole small files, and byte
// ranges (RFC 9110 Range) of the large ones.

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Fetcher counts what it downloads.
type Fetcher struct {
	Base       string // update_url + "/RECIPE/BOARD"
	Client     *http.Client
	Downloaded int64
}

// ErrNotFound is a 404: the file is not published.
var ErrNotFound = errors.New("not published")

// NewFetcher for a release directory.
func NewFetcher(base string) *Fetcher {
	return &Fetcher{Base: base, Client: &http.Client{Timeout: 120 * time.Second}}
}

// Get a whole file of at most limit bytes.
func (f *Fetcher) Get(name string, limit int64) ([]byte, error) {
	resp, err := f.Client.Get(f.Base + "/" + name)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", name, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	f.Downloaded += int64(len(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return data, nil
}

// GetRange streams bytes [r.Start, r.End) of name to sink(offset, data).
func (f *Fetcher) GetRange(name string, r ByteRange, sink func(int64, []byte) error) error {
	req, err := http.NewRequest("GET", f.Base+"/"+name, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", r.Start, r.End-1))
	resp, err := f.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		// a server without ranges sends the whole file: skip to the range
		if _, err := io.CopyN(io.Discard, resp.Body, r.Start); err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		f.Downloaded += r.Start
	default:
		return fmt.Errorf("%s: HTTP %d for bytes %d-%d", name, resp.StatusCode, r.Start, r.End-1)
	}
	buf := make([]byte, 256<<10)
	pos := r.Start
	for pos < r.End {
		want := int64(len(buf))
		if r.End-pos < want {
			want = r.End - pos
		}
		n, err := io.ReadFull(resp.Body, buf[:want])
		f.Downloaded += int64(n)
		if n > 0 {
			if err := sink(pos, buf[:n]); err != nil {
				return err
			}
			pos += int64(n)
		}
		if err != nil {
			return fmt.Errorf("%s: truncated at byte %d (%v)", name, pos, err)
		}
	}
	return nil
}
