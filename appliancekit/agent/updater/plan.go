package main

// Range planning: which chunks of an artefact must come over the network. A chunk is taken,
// in order of preference, from the target slot (already there: an interrupted update
// resumes), from the running slot at the same offset (unchanged between releases), or
// downloaded. Pure: tested by plan_test.go.

// Source says where a chunk comes from.
type Source int

const (
	InPlace Source = iota // the target already holds it
	Copy                  // copied from the running slot
	Fetch                 // downloaded
)

// ChunkPlan is the plan for one artefact.
type ChunkPlan struct {
	Sources []Source
	Ranges  []ByteRange // byte ranges to download (coalesced Fetch chunks)
}

// ByteRange is [Start, End) in the artefact.
type ByteRange struct{ Start, End int64 }

// Len of the range in bytes.
func (r ByteRange) Len() int64 { return r.End - r.Start }

// PlanChunks compares the expected chunk hashes with those of the target and the running
// copy (nil when there is none; shorter slices mean the copy ends early). Runs of chunks to
// download closer than `gap` bytes are merged into one range, so a few unchanged bytes
// cost less than another request.
func PlanChunks(want, target, running [][32]byte, chunk, size, gap int64) ChunkPlan {
	p := ChunkPlan{Sources: make([]Source, len(want))}
	for i, h := range want {
		switch {
		case i < len(target) && target[i] == h:
			p.Sources[i] = InPlace
		case i < len(running) && running[i] == h:
			p.Sources[i] = Copy
		default:
			p.Sources[i] = Fetch
			start := int64(i) * chunk
			end := start + chunk
			if end > size {
				end = size
			}
			n := len(p.Ranges)
			if n > 0 && start-p.Ranges[n-1].End <= gap {
				p.Ranges[n-1].End = end
			} else {
				p.Ranges = append(p.Ranges, ByteRange{start, end})
			}
		}
	}
	return p
}

// FetchBytes is how many bytes the plan downloads.
func (p ChunkPlan) FetchBytes() int64 {
	var n int64
	for _, r := range p.Ranges {
		n += r.Len()
	}
	return n
}

// SplitChunks turns a .chunks file (32-byte sha256 digests back to back) into digests.
func SplitChunks(data []byte) ([][32]byte, bool) {
	if len(data)%32 != 0 {
		return nil, false
	}
	out := make([][32]byte, len(data)/32)
	for i := range out {
		copy(out[i][:], data[i*32:(i+1)*32])
	}
	return out, true
}
