package fuse_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// TestSessionsSurviveMetadataOutage: two mounts of one Redis volume, one
// holding an unlinked open file and a POSIX lock. Redis stops for longer
// than the session timeout and comes back with its data: neither client
// may clean the other's session as stale, so the file still reads back and
// the lock is still held. SKIFF_OUTAGE_ROUNDS sets the number of outages
// (default 2).
func TestSessionsSurviveMetadataOutage(t *testing.T) {
	rounds := 2
	if s := os.Getenv("SKIFF_OUTAGE_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("SKIFF_OUTAGE_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	const (
		timeout   = 5 * time.Second
		heartbeat = 2 * time.Second
		extra     = 15 * time.Second // the outage lasts timeout + extra
	)
	if testing.Short() {
		t.Skipf("skipped with -short: %d outages of %v", rounds, timeout+extra)
	}
	srv := testredis.Start(t, testredis.WithPersistence())
	cfg := fusetest.Config{
		MetaURL: srv.URL(),
		// Jobs run often, heartbeats less often: after an outage a client
		// that judged by old heartbeats would clean the other at once.
		Meta: meta.Options{Heartbeat: heartbeat, SessionTimeout: timeout, JobInterval: 100 * time.Millisecond},
	}
	m1 := fusetest.Start(t, cfg)
	cfg2 := m1.Config
	cfg2.Dir = ""
	m2 := fusetest.Start(t, cfg2)

	data := make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte(rand.IntN(256))
	}
	f, err := os.OpenFile(m1.Path("unlinked"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m1.Path("unlinked")); err != nil {
		t.Fatal(err)
	}
	lk, err := os.OpenFile(m1.Path("lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	wr := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := syscall.FcntlFlock(lk.Fd(), syscall.F_SETLK, &wr); err != nil {
		t.Fatal(err)
	}
	other, err := os.OpenFile(m2.Path("lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	lockHeld := func(when string) {
		t.Helper()
		try := syscall.Flock_t{Type: syscall.F_WRLCK}
		err := syscall.FcntlFlock(other.Fd(), syscall.F_SETLK, &try)
		if err != syscall.EAGAIN && err != syscall.EACCES {
			t.Fatalf("%s: the other mount's F_SETLK got %v, want EAGAIN: the lock was released", when, err)
		}
	}
	check := func(when string) {
		t.Helper()
		got, err := io.ReadAll(io.NewSectionReader(f, 0, int64(len(data))+1))
		if err != nil {
			t.Fatalf("%s: read the unlinked open file: %v", when, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: the unlinked open file reads back %d bytes, not the %d written", when, len(got), len(data))
		}
		lockHeld(when)
	}
	check("before the outage")
	sessions := func() []meta.Session {
		t.Helper()
		ss, err := m2.Volume.Meta.Sessions(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return ss
	}
	want := sessions()
	if len(want) != 2 {
		t.Fatalf("sessions before the outage: %+v", want)
	}
	for round := 1; round <= rounds; round++ {
		start := time.Now()
		srv.Stop()
		time.Sleep(timeout + extra)
		if err := srv.StartAgain(); err != nil {
			t.Fatal(err)
		}
		// Give a would-be cleaner every chance: a full timeout of healthy
		// heartbeats and some job runs.
		time.Sleep(timeout + 2*heartbeat)
		when := "after outage " + strconv.Itoa(round)
		if got := sessions(); len(got) != 2 || got[0].ID != want[0].ID || got[1].ID != want[1].ID {
			t.Fatalf("%s: sessions %+v, want %+v", when, got, want)
		}
		check(when)
		t.Logf("outage %d of %v survived (round took %v)", round, timeout+extra, time.Since(start).Round(time.Second))
	}
}
