package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
	"github.com/skiff-fs/skiff/fsclient/meta/kvtest"
	"github.com/skiff-fs/skiff/internal/testredis"
)

func openT(t testing.TB, url string) *Engine {
	t.Helper()
	e, err := open(t.Context(), url, Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestConformance(t *testing.T) {
	srv := testredis.Start(t)
	var n atomic.Int64
	kvtest.Run(t, func(t testing.TB) kv.Engine {
		// A fresh volume per sub-test: its own prefix in one server.
		e, err := Open(t.Context(), fmt.Sprintf("%s?prefix=vol%d", srv.URL(), n.Add(1)), Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return e
	})
}

// TestKeysCarryTheHashTag looks at the server's raw keys.
func TestKeysCarryTheHashTag(t *testing.T) {
	srv := testredis.Start(t)
	for _, tc := range []struct{ url, tag string }{
		{srv.URLDB(1), "{skiff}"},
		{srv.URLDB(1) + "?prefix=v2", "{v2}"},
	} {
		e := openT(t, tc.url)
		if err := e.Update(t.Context(), func(tx kv.Tx) error {
			tx.Set("k", []byte("v"))
			tx.HSet("h", "f", []byte("v"))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		c, _, err := e.get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{tc.tag + "k", tc.tag + "h"} {
			n, err := c.Do("EXISTS", k)
			if err != nil || n != int64(1) {
				t.Errorf("%s: raw key %q: EXISTS = %v, %v; want 1", tc.url, k, n, err)
			}
		}
		c.Close()
		// Volumes with different tags do not see each other's keys.
		var keys []string
		e.Scan(t.Context(), "", func(k string) bool { keys = append(keys, k); return true })
		if len(keys) != 2 {
			t.Errorf("%s: Scan = %q, want [h k] only", tc.url, keys)
		}
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	start := time.Now()
	_, err = Open(t.Context(), "redis://"+addr+"/0", Options{})
	if err == nil {
		t.Fatal("Open of a closed port succeeded")
	}
	want := "cannot reach redis at " + addr + ": connection refused (is redis-server running? check META_URL)"
	if err.Error() != want {
		t.Errorf("Open error:\n got %q\nwant %q", err, want)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("Open took %v to report a refused connection", time.Since(start))
	}
}

func TestAuthAndDatabaseErrors(t *testing.T) {
	srv := testredis.Start(t, testredis.WithPassword("s3cret"), testredis.WithArgs("--databases", "4"))
	addr := srv.Addr()
	tests := []struct{ url, want string }{
		{"redis://:wrongpw@" + addr + "/0",
			"redis rejected the password for " + addr + " (WRONGPASS): fix the password in META_URL"},
		{"redis://alice:wrongpw@" + addr + "/0",
			"redis rejected the password for " + addr + " (WRONGPASS): fix the password in META_URL"},
		{"redis://" + addr + "/0",
			"redis at " + addr + " requires a password (NOAUTH): put it in META_URL as redis://:PASSWORD@" + addr + "/0"},
		{"redis://:s3cret@" + addr + "/9",
			"redis at " + addr + " has no database 9 (ERR DB index is out of range): use a database number below the server's \"databases\" setting (default 16) in META_URL"},
	}
	for _, tc := range tests {
		_, err := Open(t.Context(), tc.url, Options{})
		if err == nil {
			t.Errorf("Open(%s) succeeded", tc.url)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("Open(%s):\n got %q\nwant %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), "wrongpw") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %q shows the password", err)
		}
	}
	e := openT(t, "redis://:s3cret@"+addr+"/3")
	if got, want := e.Name(), "redis://"+addr+"/3"; got != want {
		t.Errorf("Name() = %q, want %q (no password)", got, want)
	}
	if _, err := e.Incr(t.Context(), "x", 1); err != nil {
		t.Errorf("Incr with the right password: %v", err)
	}

	plain := testredis.Start(t)
	_, err := Open(t.Context(), "redis://:extra@"+plain.Addr()+"/0", Options{})
	if err == nil || !strings.Contains(err.Error(), "has no password set but META_URL gives one") {
		t.Errorf("Open with a password the server does not need: %v", err)
	}
}

// counter runs one Get+Set increment of key in e.
func counter(ctx context.Context, e kv.Engine, key string, fnRuns *atomic.Int64, hook func()) error {
	return e.Update(ctx, func(tx kv.Tx) error {
		if fnRuns != nil {
			fnRuns.Add(1)
		}
		v, err := tx.Get(key)
		if err != nil {
			return err
		}
		n := 0
		if v != nil {
			if n, err = strconv.Atoi(string(v)); err != nil {
				return err
			}
		}
		if hook != nil {
			hook()
		}
		tx.Set(key, []byte(strconv.Itoa(n+1)))
		return nil
	})
}

// TestWatchConflictDeterministic makes a second client commit a change to
// a key fn has read, from inside fn: the first commit must fail its EXEC
// and fn must run again on the new value.
func TestWatchConflictDeterministic(t *testing.T) {
	srv := testredis.Start(t)
	a, b := openT(t, srv.URL()), openT(t, srv.URL())
	var runs atomic.Int64
	first := true
	err := counter(t.Context(), a, "n", &runs, func() {
		if first {
			first = false
			if err := counter(t.Context(), b, "n", nil, nil); err != nil {
				t.Errorf("interfering Update: %v", err)
			}
		}
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if runs.Load() != 2 || a.conflicts.Load() != 1 {
		t.Errorf("fn ran %d times with %d conflicts, want 2 and 1", runs.Load(), a.conflicts.Load())
	}
	var v []byte
	a.View(t.Context(), func(tx kv.Tx) error { v, err = tx.Get("n"); return err })
	if string(v) != "2" {
		t.Errorf("n = %q, want 2 (both increments)", v)
	}

	// The retry bound: every run is disturbed, so Update gives up.
	a.opts.MaxRetries = 3
	runs.Store(0)
	err = counter(t.Context(), a, "n", &runs, func() { counter(t.Context(), b, "n", nil, nil) })
	if !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("always-conflicting Update = %v, want kv.ErrConflict", err)
	}
	if runs.Load() != 3 {
		t.Errorf("fn ran %d times, want MaxRetries = 3", runs.Load())
	}
	if !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Errorf("error %q does not say how often it tried", err)
	}
}

// TestWatchConflictRace has two engines (two pools) race on one counter.
func TestWatchConflictRace(t *testing.T) {
	srv := testredis.Start(t)
	engines := []*Engine{openT(t, srv.URL()), openT(t, srv.URL())}
	const perEngine, each = 4, 100
	var wg sync.WaitGroup
	for _, e := range engines {
		for range perEngine {
			wg.Go(func() {
				for range each {
					if err := counter(t.Context(), e, "n", nil, nil); err != nil {
						t.Errorf("Update: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	var v []byte
	engines[0].View(t.Context(), func(tx kv.Tx) error { v, _ = tx.Get("n"); return nil })
	if want := strconv.Itoa(len(engines) * perEngine * each); string(v) != want {
		t.Errorf("n = %q, want %s", v, want)
	}
	c := engines[0].conflicts.Load() + engines[1].conflicts.Load()
	t.Logf("%d conflicts retried", c)
	if c == 0 {
		t.Errorf("no WATCH conflict happened with %d racing writers; the test did not exercise retries", len(engines)*perEngine)
	}
}

// allOrNone writes marker to three keys of different kinds in one
// transaction; check reads them back.
func writeMarker(tx kv.Tx, marker []byte) {
	tx.Set("a", marker)
	tx.HSet("h", "f", marker)
	tx.Append("log", marker)
}

func checkAllOrNone(t *testing.T, e kv.Engine, marker []byte) (applied bool) {
	t.Helper()
	var a, f, log []byte
	err := e.View(t.Context(), func(tx kv.Tx) error {
		var err error
		if a, err = tx.Get("a"); err != nil {
			return err
		}
		if f, err = tx.HGet("h", "f"); err != nil {
			return err
		}
		log, err = tx.Get("log")
		return err
	})
	if err != nil {
		t.Fatalf("View after restart: %v", err)
	}
	got := []bool{bytes.Equal(a, marker), bytes.Equal(f, marker), bytes.Contains(log, marker)}
	if got[0] != got[1] || got[1] != got[2] {
		t.Fatalf("half-applied transaction: a=%q h.f=%q log=%q (marker %q)", a, f, log, marker)
	}
	return got[0]
}

// TestRestartDuringTransaction restarts (or kills) Redis while fn runs,
// and between fn and EXEC. Update must either succeed (having re-run fn
// on a new connection) or fail clearly, and the data must hold all or
// none of the writes.
func TestRestartDuringTransaction(t *testing.T) {
	for _, tc := range []struct {
		name     string
		persist  bool
		inFn     bool // restart inside fn (after its reads) or just before EXEC
		kill     bool
		wantDone bool // Update must succeed (a clean retry is possible)
	}{
		{"restart in fn, persistent", true, true, false, true},
		{"restart before EXEC, persistent", true, false, false, true},
		{"kill in fn, not persistent", false, true, true, true},
		{"kill before EXEC, not persistent", false, false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []testredis.Option
			if tc.persist {
				opts = append(opts, testredis.WithPersistence())
			}
			srv := testredis.Start(t, opts...)
			e := openT(t, srv.URL())
			if err := e.Update(t.Context(), func(tx kv.Tx) error { tx.Set("a", []byte("old")); return nil }); err != nil {
				t.Fatal(err)
			}
			restarted := false
			bounce := func() {
				if restarted {
					return
				}
				restarted = true
				if tc.kill {
					srv.Kill()
				} else {
					srv.Stop()
				}
				if err := srv.StartAgain(); err != nil {
					t.Errorf("restart: %v", err)
				}
			}
			if !tc.inFn {
				e.testHookBeforeCommit = bounce
			}
			marker := []byte("marker-" + tc.name)
			runs := 0
			err := e.Update(t.Context(), func(tx kv.Tx) error {
				runs++
				if _, err := tx.Get("a"); err != nil {
					return err
				}
				if _, err := tx.HGetAll("h"); err != nil {
					return err
				}
				if tc.inFn {
					bounce()
				}
				writeMarker(tx, marker)
				return nil
			})
			e.testHookBeforeCommit = nil
			if !restarted {
				t.Fatal("the server was never restarted")
			}
			applied := checkAllOrNone(t, e, marker)
			t.Logf("Update = %v after %d runs, %d reconnects; applied=%v", err, runs, e.reconns.Load(), applied)
			switch {
			case err == nil:
				if !applied {
					t.Errorf("Update reported success but the writes are not there")
				}
				if runs < 2 {
					t.Errorf("fn ran %d times; a broken connection must re-run it", runs)
				}
			case errors.Is(err, kv.ErrCommitUnknown):
				if tc.wantDone {
					t.Errorf("Update = %v; the break happened before EXEC, so it must be retried", err)
				}
			default:
				t.Errorf("Update = %v, want success or kv.ErrCommitUnknown", err)
			}
			if e.reconns.Load() == 0 {
				t.Errorf("no reconnect was counted")
			}
		})
	}
}

// TestStaleIdleConnections restarts the server while the pool holds idle
// connections; the next operations must not fail.
func TestStaleIdleConnections(t *testing.T) {
	srv := testredis.Start(t, testredis.WithPersistence())
	e := openT(t, srv.URL())
	var wg sync.WaitGroup
	for range 4 { // fill the pool with several idle connections
		wg.Go(func() { counter(t.Context(), e, "n", nil, nil) })
	}
	wg.Wait()
	srv.Restart(t)
	for i := range 5 {
		if err := counter(t.Context(), e, "n", nil, nil); err != nil {
			t.Fatalf("Update %d after restart: %v", i, err)
		}
		err := e.Update(t.Context(), func(tx kv.Tx) error { tx.Set("blind", []byte("x")); return nil }) // no read first
		if err != nil {
			t.Fatalf("blind Update %d after restart: %v", i, err)
		}
	}
	if _, err := e.Incr(t.Context(), "ids", 1); err != nil {
		t.Errorf("Incr after restart: %v", err)
	}
	var keys []string
	if err := e.Scan(t.Context(), "", func(k string) bool { keys = append(keys, k); return true }); err != nil {
		t.Errorf("Scan after restart: %v", err)
	}
}

// TestUnknownOutcome cuts the connection right after EXEC reaches the
// server, through a proxy: Update must say the outcome is unknown (it was
// in fact applied) and must not retry.
func TestUnknownOutcome(t *testing.T) {
	srv := testredis.Start(t)
	p := newCutProxy(t, srv.Addr())
	e := openT(t, "redis://"+p.addr()+"/0")
	runs := 0
	p.armed.Store(true)
	marker := []byte("m")
	err := e.Update(t.Context(), func(tx kv.Tx) error {
		runs++
		writeMarker(tx, marker)
		return nil
	})
	if !errors.Is(err, kv.ErrCommitUnknown) {
		t.Fatalf("Update through a connection cut after EXEC = %v, want kv.ErrCommitUnknown", err)
	}
	if !strings.Contains(err.Error(), "may or may not have been applied") {
		t.Errorf("error %q does not explain the unknown outcome", err)
	}
	if runs != 1 {
		t.Errorf("fn ran %d times; an unknown commit must not be retried", runs)
	}
	direct := openT(t, srv.URL())
	if !checkAllOrNone(t, direct, marker) {
		t.Errorf("the proxy passed EXEC on, so the writes should be there")
	}
}

// cutProxy forwards TCP to a server; when armed it forwards a client
// chunk containing EXEC and then closes the connection before any reply.
type cutProxy struct {
	l     net.Listener
	to    string
	armed atomic.Bool
}

func newCutProxy(t *testing.T, to string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, to: to}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.serve(c) })
		}
	})
	return p
}

func (p *cutProxy) addr() string { return p.l.Addr().String() }

func (p *cutProxy) serve(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.to)
	if err != nil {
		return
	}
	defer s.Close()
	replies := make(chan struct{})
	go func() { io.Copy(c, s); close(replies) }()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if p.armed.Load() && bytes.Contains(chunk, []byte("EXEC\r\n")) {
				p.armed.Store(false)
				// Let the server execute, but drop its reply: the
				// client's side closes first. Redis writes replies only
				// after running every command of the chunk, so once the
				// reply copier stops, EXEC has run.
				c.Close()
				s.Write(chunk)
				<-replies
				return
			}
			if _, err := s.Write(chunk); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
