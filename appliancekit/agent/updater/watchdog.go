package main

// The trial watchdog: the initramfs started it (boot/templates/init.sh.j2) when it booted a
// trial; the agent feeds it until the trial commits, then stops it with the magic close.
// If the trial hangs before or after the agent starts, nobody feeds it and the machine
// resets into the committed slot.

import (
	"os"
	"sync"
	"time"
)

// Watchdog feeds a running watchdog device.
type Watchdog struct {
	mu   sync.Mutex
	f    *os.File
	stop chan struct{}
}

// OpenWatchdog opens dev and feeds it every `every` until Disarm; nil when there is none.
func OpenWatchdog(dev string, every time.Duration) *Watchdog {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return nil
	}
	w := &Watchdog{f: f, stop: make(chan struct{})}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.mu.Lock()
				if w.f != nil {
					w.f.Write([]byte{'1'})
				}
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// Disarm stops the watchdog (magic close): the boot committed.
func (w *Watchdog) Disarm() {
	if w == nil {
		return
	}
	close(w.stop)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.f.Write([]byte{'V'})
	w.f.Close()
	w.f = nil
}

// Abandon stops feeding without the magic close: the watchdog will reset the machine.
func (w *Watchdog) Abandon() {
	if w == nil {
		return
	}
	close(w.stop)
}
