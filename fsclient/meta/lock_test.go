package meta

import (
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSetPlock(t *testing.T) {
	const eof = math.MaxUint64
	R, W, U := lockRead, lockWrite, lockUnlock
	tests := []struct {
		name string
		have []plock
		req  plock
		want []plock
	}{
		{"lock empty", nil, plock{0, 100, 7, W}, []plock{{0, 100, 7, W}}},
		{"unlock middle splits", []plock{{0, 100, 7, W}}, plock{40, 60, 8, U},
			[]plock{{0, 39, 7, W}, {61, 100, 7, W}}},
		{"relock middle merges", []plock{{0, 39, 7, W}, {61, 100, 7, W}}, plock{40, 60, 8, W},
			[]plock{{0, 100, 8, W}}},
		{"other type in the middle", []plock{{0, 100, 7, W}}, plock{40, 60, 8, R},
			[]plock{{0, 39, 7, W}, {40, 60, 8, R}, {61, 100, 7, W}}},
		{"adjacent same type merges", []plock{{0, 9, 1, R}}, plock{10, 19, 2, R}, []plock{{0, 19, 2, R}}},
		{"adjacent other type stays", []plock{{0, 9, 1, R}}, plock{10, 19, 2, W}, []plock{{0, 9, 1, R}, {10, 19, 2, W}}},
		{"covering replaces", []plock{{5, 9, 1, R}, {20, 30, 1, W}}, plock{0, 40, 2, R}, []plock{{0, 40, 2, R}}},
		{"unlock all", []plock{{5, 9, 1, R}, {20, 30, 1, W}}, plock{0, eof, 0, U}, nil},
		{"unlock nothing", []plock{{5, 9, 1, R}}, plock{10, 20, 0, U}, []plock{{5, 9, 1, R}}},
		{"to eof", []plock{{0, eof, 1, W}}, plock{100, eof, 0, U}, []plock{{0, 99, 1, W}}},
		{"eof then start", []plock{{10, eof, 1, W}}, plock{0, 9, 2, W}, []plock{{0, eof, 2, W}}},
		{"at eof", []plock{{0, eof, 1, R}}, plock{eof, eof, 2, W}, []plock{{0, eof - 1, 1, R}, {eof, eof, 2, W}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := setPlock(tc.have, tc.req)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b []plock) bool {
				return len(a) == 0 && len(b) == 0 || cmp.Equal(a, b)
			})); diff != "" {
				t.Fatalf("setPlock(%v, %v) (-want +got):\n%s", tc.have, tc.req, diff)
			}
			if len(got) > 0 {
				back, err := decodePlocks(encodePlocks(got))
				if err != nil || !cmp.Equal(back, got) {
					t.Fatalf("round trip: %v, %v", back, err)
				}
			}
		})
	}
}

func TestDecodePlocksCorrupt(t *testing.T) {
	good := encodePlocks([]plock{{0, 9, 1, lockRead}, {10, 19, 2, lockWrite}})
	bad := map[string][]byte{
		"empty":         {},
		"short":         good[:plockLen-1],
		"long":          append(append([]byte{}, good...), 0),
		"type":          append(append([]byte{}, good[:plockLen-1]...), 'X'),
		"start > end":   encodePlocks([]plock{{9, 0, 1, lockRead}}),
		"out of order":  encodePlocks([]plock{{10, 19, 2, lockWrite}, {0, 9, 1, lockRead}}),
		"overlapping":   encodePlocks([]plock{{0, 10, 2, lockWrite}, {10, 19, 1, lockRead}}),
		"after max end": encodePlocks([]plock{{0, math.MaxUint64, 2, lockWrite}, {5, 6, 1, lockRead}}),
	}
	for name, b := range bad {
		if _, err := decodePlocks(b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: decodePlocks(%x) = %v, want errCorrupt", name, b, err)
		}
	}
}

// checkPlocks verifies setPlock's invariants: sorted, disjoint, valid
// ranges, adjacent ranges of the same type merged.
func checkPlocks(t *testing.T, ls []plock) {
	t.Helper()
	for i, l := range ls {
		if l.Start > l.End || (l.Type != lockRead && l.Type != lockWrite) {
			t.Fatalf("bad range %v in %v", l, ls)
		}
		if i > 0 {
			p := ls[i-1]
			if p.End >= l.Start {
				t.Fatalf("ranges overlap or are out of order: %v", ls)
			}
			if p.Type == l.Type && p.End+1 == l.Start {
				t.Fatalf("adjacent ranges of one type not merged: %v", ls)
			}
		}
	}
}

func FuzzDecodePlocks(f *testing.F) {
	f.Add(encodePlocks([]plock{{0, 100, 7, lockWrite}}), uint64(40), uint64(60), uint8(2))
	f.Add(encodePlocks([]plock{{0, 9, 1, lockRead}, {10, math.MaxUint64, 2, lockWrite}}), uint64(5), uint64(math.MaxUint64), uint8(0))
	f.Add([]byte{}, uint64(0), uint64(0), uint8(1))
	f.Add([]byte("0123456789abcdefghijR"), uint64(1), uint64(2), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, start, end uint64, typ uint8) {
		ls, err := decodePlocks(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error does not wrap errCorrupt: %v", err)
			}
			return
		}
		if got := encodePlocks(ls); string(got) != string(b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, got)
		}
		if start > end {
			start, end = end, start
		}
		req := plock{Start: start, End: end, Pid: 9, Type: []uint32{lockRead, lockWrite, lockUnlock}[typ%3]}
		out := setPlock(ls, req)
		checkPlocks(t, out)
		if len(out) > 0 {
			if _, err := decodePlocks(encodePlocks(out)); err != nil {
				t.Fatalf("setPlock result does not decode: %v", err)
			}
		}
	})
}

// FuzzSetPlock compares setPlock with a model that keeps the lock type of
// every byte, over small offsets and the two last bytes before "EOF".
func FuzzSetPlock(f *testing.F) {
	f.Add([]byte{1, 0, 100, 7, 2, 40, 20, 8})
	f.Add([]byte{0, 10, 0x80, 1, 1, 0, 9, 2, 2, 5, 3, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const small = 100
		points := []uint64{math.MaxUint64 - 1, math.MaxUint64}
		for p := uint64(0); p < small; p++ {
			points = append(points, p)
		}
		model := map[uint64]uint32{} // point -> type; missing = unlocked
		typeAt := func(ls []plock, p uint64) (uint32, bool) {
			for _, l := range ls {
				if l.Start <= p && p <= l.End {
					return l.Type, true
				}
			}
			return 0, false
		}
		var ls []plock
		for ; len(ops) >= 4; ops = ops[4:] {
			req := plock{Type: []uint32{lockRead, lockWrite, lockUnlock}[ops[0]%3], Start: uint64(ops[1] % 64), Pid: uint32(ops[3])}
			if ops[2]&0x80 != 0 {
				req.End = math.MaxUint64
			} else {
				req.End = req.Start + uint64(ops[2]%32)
			}
			ls = setPlock(ls, req)
			for _, p := range points {
				if req.Start <= p && p <= req.End {
					if req.Type == lockUnlock {
						delete(model, p)
					} else {
						model[p] = req.Type
					}
				}
			}
			checkPlocks(t, ls)
			for _, p := range points {
				got, locked := typeAt(ls, p)
				want, wantLocked := model[p]
				if locked != wantLocked || got != want {
					t.Fatalf("after %v: byte %d has type %d (locked %v), want %d (%v); list %v", req, p, got, locked, want, wantLocked, ls)
				}
			}
			if req.Type != lockUnlock {
				found := false
				for _, l := range ls {
					if l.Start <= req.Start && req.End <= l.End {
						found = true
						if l.Pid != req.Pid {
							t.Fatalf("range %v holding %v has pid %d", l, req, l.Pid)
						}
					}
				}
				if !found {
					t.Fatalf("no range holds %v: %v", req, ls)
				}
			}
		}
	})
}
