package main

import "testing"

func h(b byte) [32]byte { var x [32]byte; x[0] = b; return x }

func TestPlanTakesTargetThenRunningThenNetwork(t *testing.T) {
	want := [][32]byte{h(1), h(2), h(3), h(4), h(5), h(6)}
	target := [][32]byte{h(1), h(0), h(0)}              // chunk 0 already written (resume)
	running := [][32]byte{h(9), h(2), h(9), h(9), h(5)} // chunks 1 and 4 unchanged
	p := PlanChunks(want, target, running, 4096, 6*4096-100, 0)
	wantSrc := []Source{InPlace, Copy, Fetch, Fetch, Copy, Fetch}
	for i, s := range wantSrc {
		if p.Sources[i] != s {
			t.Fatalf("chunk %d: %v, want %v", i, p.Sources[i], s)
		}
	}
	if len(p.Ranges) != 2 || p.Ranges[0] != (ByteRange{2 * 4096, 4 * 4096}) || p.Ranges[1] != (ByteRange{5 * 4096, 6*4096 - 100}) {
		t.Fatalf("ranges %v", p.Ranges)
	}
	if p.FetchBytes() != 3*4096-100 {
		t.Fatalf("fetch bytes %d", p.FetchBytes())
	}
}

func TestPlanMergesCloseRanges(t *testing.T) {
	want := [][32]byte{h(1), h(2), h(3)}
	running := [][32]byte{h(0), h(2), h(0)}
	p := PlanChunks(want, nil, running, 4096, 3*4096, 4096)
	if len(p.Ranges) != 1 || p.Ranges[0] != (ByteRange{0, 3 * 4096}) {
		t.Fatalf("ranges %v", p.Ranges)
	}
}

func TestPlanNothingToFetchWhenUnchanged(t *testing.T) {
	want := [][32]byte{h(1), h(2)}
	p := PlanChunks(want, nil, want, 4096, 8192, 0)
	if p.FetchBytes() != 0 || len(p.Ranges) != 0 {
		t.Fatalf("%+v", p)
	}
}

func TestSplitChunks(t *testing.T) {
	if _, ok := SplitChunks(make([]byte, 33)); ok {
		t.Fatal("accepted a torn chunk list")
	}
	c, ok := SplitChunks(make([]byte, 64))
	if !ok || len(c) != 2 {
		t.Fatal(c)
	}
}
