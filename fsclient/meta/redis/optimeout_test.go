package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
	"github.com/skiff-fs/skiff/internal/testredis"
)

const testOpTimeout = time.Second

func openTimeout(t testing.TB, url string) *Engine {
	t.Helper()
	e, err := open(t.Context(), url, Options{OpTimeout: testOpTimeout})
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() { e.Close() })
	if err := e.Update(t.Context(), func(tx kv.Tx) error { tx.Set("k", []byte("v")); return nil }); err != nil {
		t.Fatalf("Update: %v", err)
	}
	return e
}

// timedOp runs one operation of each kind (the index picks) and returns
// its error and duration.
func timedOp(e *Engine, i int) (error, time.Duration) {
	ctx := context.Background()
	t0 := time.Now()
	var err error
	switch i % 4 {
	case 0:
		err = e.View(ctx, func(tx kv.Tx) error { _, err := tx.Get("k"); return err })
	case 1:
		err = e.Update(ctx, func(tx kv.Tx) error { tx.Set("k", []byte("w")); return nil })
	case 2:
		_, err = e.Incr(ctx, "n", 1)
	case 3:
		err = e.Scan(ctx, "", func(string) bool { return true })
	}
	return err, time.Since(t0)
}

// checkOutage runs operations against a server that is gone: the first
// ones take at most OpTimeout, and once the server is known down they
// fail at once. No error reads as the caller's deadline.
func checkOutage(t *testing.T, e *Engine) {
	t.Helper()
	bound := testOpTimeout + 300*time.Millisecond
	fast := 0
	for i := range 12 {
		err, d := timedOp(e, i)
		if err == nil {
			t.Fatalf("op %d succeeded with the server gone", i)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("op %d: error wraps context.DeadlineExceeded (the caller set no deadline): %v", i, err)
		}
		if d > bound {
			t.Errorf("op %d took %v, want at most %v: %v", i, d, bound, err)
		}
		if d < 100*time.Millisecond {
			fast++
		}
		t.Logf("op %d: %v: %v", i, d.Round(time.Millisecond), err)
	}
	if fast < 8 {
		t.Errorf("%d of 12 operations failed fast (< 100ms) while the server was known down, want >= 8", fast)
	}
}

// recovers waits until operations succeed again, within a few seconds.
func recovers(t *testing.T, e *Engine) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		err, _ := timedOp(e, i)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the server came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestOpTimeoutKilled(t *testing.T) {
	srv := testredis.Start(t)
	e := openTimeout(t, srv.URL())
	srv.Kill()
	checkOutage(t, e)
	if err := srv.StartAgain(); err != nil {
		t.Fatal(err)
	}
	recovers(t, e)
}

func TestOpTimeoutHung(t *testing.T) {
	srv := testredis.Start(t)
	e := openTimeout(t, srv.URL())
	resume := srv.Pause(t)
	checkOutage(t, e)
	resume()
	recovers(t, e)
}

func TestOpTimeoutOpenHung(t *testing.T) {
	srv := testredis.Start(t, testredis.WithPassword("pw"))
	srv.Pause(t)
	t0 := time.Now()
	_, err := open(t.Context(), srv.URL(), Options{OpTimeout: testOpTimeout})
	if err == nil || time.Since(t0) > testOpTimeout+300*time.Millisecond {
		t.Fatalf("Open of a hung server: %v after %v, want an error within %v", err, time.Since(t0), testOpTimeout)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open error wraps context.DeadlineExceeded: %v", err)
	}
}
