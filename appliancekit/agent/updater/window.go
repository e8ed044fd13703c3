package main

// The maintenance window: "HH:MM-HH:MM" in UTC, possibly across midnight; "" = any time.

import (
	"fmt"
	"time"
)

// Window is [Start, End) in minutes after midnight UTC; Always when no window is set.
type Window struct {
	Always     bool
	Start, End int
}

// ParseWindow reads the update_window setting.
func ParseWindow(s string) (Window, error) {
	if s == "" {
		return Window{Always: true}, nil
	}
	var h1, m1, h2, m2 int
	if n, err := fmt.Sscanf(s, "%d:%d-%d:%d", &h1, &m1, &h2, &m2); err != nil || n != 4 {
		return Window{}, fmt.Errorf("update_window %q is not HH:MM-HH:MM", s)
	}
	if h1 > 23 || h2 > 23 || m1 > 59 || m2 > 59 || h1 < 0 || h2 < 0 || m1 < 0 || m2 < 0 {
		return Window{}, fmt.Errorf("update_window %q is not HH:MM-HH:MM", s)
	}
	return Window{Start: h1*60 + m1, End: h2*60 + m2}, nil
}

// Contains says whether t (any zone) lies in the window.
func (w Window) Contains(t time.Time) bool {
	if w.Always {
		return true
	}
	u := t.UTC()
	m := u.Hour()*60 + u.Minute()
	if w.Start <= w.End {
		return m >= w.Start && m < w.End
	}
	return m >= w.Start || m < w.End // across midnight
}
