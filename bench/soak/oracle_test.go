package soak

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestCheckContent(t *testing.T) {
	acked := func(s string) *File {
		f := &File{}
		f.Write(0, []byte(s))
		f.Ack()
		return f
	}
	tests := []struct {
		name    string
		file    func() *File
		got     string
		wantErr string // "" means no error
	}{
		{"exact", func() *File { return acked("hello world") }, "hello world", ""},
		{"exact lost tail", func() *File { return acked("hello world") }, "hello", "differs"},
		{"exact flipped", func() *File { return acked("hello world") }, "hellO world", "differs"},
		{"exact grown", func() *File { return acked("hello") }, "hello\x00", "differs"},
		{"pending applied", func() *File { f := acked("AAAA"); f.Write(2, []byte("XY")); return f }, "AAXY", ""},
		{"pending lost", func() *File { f := acked("AAAA"); f.Write(2, []byte("XY")); return f }, "AAAA", ""},
		{"pending half", func() *File { f := acked("AAAA"); f.Write(2, []byte("XY")); return f }, "AAXA", ""},
		{"pending foreign byte", func() *File { f := acked("AAAA"); f.Write(2, []byte("XY")); return f }, "AXXY", "acknowledged byte at offset 1"},
		{"pending acked byte lost", func() *File { f := acked("AAAA"); f.Write(2, []byte("XY")); return f }, "A", "lost"},
		{"pending extension", func() *File { f := acked("AA"); f.Write(4, []byte("Z")); return f }, "AA\x00\x00Z", ""},
		{"pending too long", func() *File { f := acked("AA"); f.Write(1, []byte("Z")); return f }, "AZ\x00", "exceeds"},
		{"truncate applied", func() *File { f := acked("ABCDEF"); f.Truncate(2); f.Write(4, []byte("ZZ")); return f }, "AB\x00\x00ZZ", ""},
		{"truncate only", func() *File { f := acked("ABCDEF"); f.Truncate(2); f.Write(4, []byte("ZZ")); return f }, "AB", ""},
		{"truncate lost", func() *File { f := acked("ABCDEF"); f.Truncate(2); f.Write(4, []byte("ZZ")); return f }, "ABCDZZ", ""},
		{"truncate kept bytes lost", func() *File { f := acked("ABCDEF"); f.Truncate(2); return f }, "A", "lost"},
		{"truncate wrong byte", func() *File { f := acked("ABCDEF"); f.Truncate(2); return f }, "ABXD", "neither"},
		{"foreign byte in a hole", func() *File { f := acked("AB"); f.Write(4, []byte("Z")); return f }, "AB\x00QZ", "neither"},
		{"acked after pending", func() *File { f := acked("AAAA"); f.Write(0, []byte("B")); f.Ack(); return f }, "AAAA", "differs"},
		{"tainted does not ack", func() *File { f := acked("AAAA"); f.Write(0, []byte("B")); f.Taint(); f.Ack(); return f }, "AAAA", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.file().CheckContent([]byte(tc.got))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("CheckContent(%q): %v", tc.got, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("CheckContent(%q) = %v, want an error containing %q", tc.got, err, tc.wantErr)
			}
		})
	}
}

// TestModel drives File with random operations and acknowledgements and
// builds what a crash may leave (the acknowledged content with any subset
// of the later changes applied, in any order): the oracle accepts every
// such state (it is sound), and reports a lost acknowledged byte that no
// later change touched (it can fail).
func TestModel(t *testing.T) {
	seed := uint64(rand.Int64())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	caught := 0
	for iter := 0; iter < 2000; iter++ {
		f := &File{}
		for range rng.IntN(12) {
			switch rng.IntN(4) {
			case 0, 1:
				off := rng.Int64N(int64(len(f.Cur)) + 8)
				data := make([]byte, 1+rng.IntN(8))
				for i := range data {
					data[i] = byte(1 + rng.IntN(255))
				}
				f.Write(off, data)
			case 2:
				f.Truncate(rng.Int64N(int64(len(f.Cur)) + 8))
			case 3:
				f.Ack()
			}
		}
		// A crash state: apply a random subset of the pending changes in
		// a random order to the acknowledged content.
		state := bytes.Clone(f.Acked)
		ops := append([]Op(nil), f.Pending...)
		rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
		for _, op := range ops {
			if rng.IntN(2) == 0 {
				continue
			}
			switch op.Kind {
			case OpWrite:
				end := op.Off + int64(len(op.Data))
				if end > int64(len(state)) {
					state = append(state, make([]byte, end-int64(len(state)))...)
				}
				copy(state[op.Off:], op.Data)
			case OpTruncate:
				if op.Size <= int64(len(state)) {
					state = state[:op.Size]
				} else {
					state = append(state, make([]byte, op.Size-int64(len(state)))...)
				}
			}
		}
		if _, err := f.CheckContent(state); err != nil {
			t.Fatalf("iteration %d: a possible crash state was rejected: %v\nacked %q pending %+v state %q", iter, err, f.Acked, f.Pending, state)
		}
		// Lose one acknowledged byte that nothing pending touched.
		if p, ok := untouched(f, state); ok {
			bad := bytes.Clone(state)
			bad[p] ^= 0xff
			if _, err := f.CheckContent(bad); err == nil {
				t.Fatalf("iteration %d: a flipped acknowledged byte at %d was accepted", iter, p)
			}
			if _, err := f.CheckContent(state[:p]); err == nil {
				t.Fatalf("iteration %d: a file cut at acknowledged byte %d was accepted", iter, p)
			}
			caught++
		}
	}
	if caught < 100 {
		t.Fatalf("only %d iterations had an acknowledged byte to lose", caught)
	}
}

// untouched finds an acknowledged offset that no pending change can
// alter.
func untouched(f *File, state []byte) (int64, bool) {
	for p := int64(0); p < int64(len(f.Acked)) && p < int64(len(state)); p++ {
		ok := true
		for _, op := range f.Pending {
			if op.Kind == OpWrite && p >= op.Off && p < op.Off+int64(len(op.Data)) || op.Kind == OpTruncate && op.Size <= p {
				ok = false
			}
		}
		if ok {
			return p, true
		}
	}
	return 0, false
}

func TestVerify(t *testing.T) {
	o := &Oracle{}
	o.NewDir("c0", false)
	o.NewDir("c0/d1", true) // mkdir failed: may be absent
	keep := o.NewFile("c0/f1", false)
	keep.Write(0, []byte("data"))
	keep.Ack()
	moved := o.NewFile("c0/f2", false)
	o.Renamed(moved, "c0/r3", false) // outcome unknown
	gone := o.NewFile("c0/f4", false)
	o.Unlinked(gone, true)
	o.NewFile("c0/f5", true) // create failed: may exist, empty

	good := map[string][]byte{"c0/f1": []byte("data"), "c0/r3": nil, "c0/f5": nil}
	if r := o.Verify(good, map[string]bool{"c0": true}); len(r.Problems) > 0 || r.BytesVerified != 4 {
		t.Fatalf("a correct volume: %+v", r)
	}
	tests := []struct {
		name  string
		files map[string][]byte
		dirs  map[string]bool
		want  string
	}{
		{"acknowledged file missing", map[string][]byte{"c0/f2": nil}, map[string]bool{"c0": true}, "file 0: missing"},
		{"acknowledged bytes lost", map[string][]byte{"c0/f1": []byte("dat"), "c0/f2": nil}, map[string]bool{"c0": true}, "differs"},
		{"renamed at both names", map[string][]byte{"c0/f1": []byte("data"), "c0/f2": nil, "c0/r3": nil}, map[string]bool{"c0": true}, "more than one"},
		{"renamed at neither", map[string][]byte{"c0/f1": []byte("data")}, map[string]bool{"c0": true}, "file 1: missing"},
		{"unlinked file back", map[string][]byte{"c0/f1": []byte("data"), "c0/f2": nil, "c0/f4": nil}, map[string]bool{"c0": true}, "unlinked, but"},
		{"unknown entry", map[string][]byte{"c0/f1": []byte("data"), "c0/f2": nil, "c0/x": nil}, map[string]bool{"c0": true}, "c0/x: on the volume"},
		{"directory missing", map[string][]byte{"c0/f1": []byte("data"), "c0/f2": nil}, map[string]bool{}, "directory c0: missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := o.Verify(tc.files, tc.dirs)
			if !strings.Contains(strings.Join(r.Problems, "\n"), tc.want) {
				t.Errorf("problems %q, want one containing %q", r.Problems, tc.want)
			}
		})
	}
}
