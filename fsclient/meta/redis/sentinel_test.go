package redis

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// fakeSentinel answers SENTINEL get-master-addr-by-name for one master
// with whatever address it currently holds. (Only that command: the
// engine needs no other.)
type fakeSentinel struct {
	l      net.Listener
	master string
	mu     sync.Mutex
	target string // host:port of the master
}

func newFakeSentinel(t *testing.T, master, target string) *fakeSentinel {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSentinel{l: l, master: master, target: target}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { f.serve(c) })
		}
	})
	return f
}

func (f *fakeSentinel) set(target string) { f.mu.Lock(); f.target = target; f.mu.Unlock() }

func (f *fakeSentinel) serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		req := buf[:n]
		if !bytes.Contains(req, []byte("get-master-addr-by-name")) {
			c.Write([]byte("-ERR fake sentinel knows one command\r\n"))
			continue
		}
		if !bytes.Contains(req, []byte("\r\n"+f.master+"\r\n")) {
			c.Write([]byte("*-1\r\n"))
			continue
		}
		f.mu.Lock()
		host, port, _ := net.SplitHostPort(f.target)
		f.mu.Unlock()
		fmt.Fprintf(c, "*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(host), host, len(port), port)
	}
}

func TestSentinel(t *testing.T) {
	srv1 := testredis.Start(t, testredis.WithPassword("pw"))
	srv2 := testredis.Start(t, testredis.WithPassword("pw"))
	s := newFakeSentinel(t, "mymaster", srv1.Addr())

	// A dead sentinel first: the engine must move on to the next one.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	url := fmt.Sprintf("redis+sentinel://:pw@%s,%s/mymaster/2?prefix=v", deadAddr, s.l.Addr())
	e := openT(t, url)
	if strings.Contains(e.Name(), "pw") {
		t.Errorf("Name() %q shows the password", e.Name())
	}
	if err := e.Update(t.Context(), func(tx kv.Tx) error { tx.Set("k", []byte("on1")); return nil }); err != nil {
		t.Fatalf("Update via sentinel: %v", err)
	}

	// Failover: the sentinel now names srv2 and srv1 goes away. The next
	// transaction must re-resolve and land on srv2.
	s.set(srv2.Addr())
	srv1.Stop()
	err = e.Update(t.Context(), func(tx kv.Tx) error {
		v, err := tx.Get("k")
		if v != nil {
			t.Errorf("Get(k) on the new master = %q; srv2 never had it", v)
		}
		tx.Set("k", []byte("on2"))
		return err
	})
	if err != nil {
		t.Fatalf("Update after failover: %v", err)
	}
	direct := openT(t, "redis://:pw@"+srv2.Addr()+"/2?prefix=v")
	direct.View(t.Context(), func(tx kv.Tx) error {
		if v, _ := tx.Get("k"); string(v) != "on2" {
			t.Errorf("srv2 holds k = %q, want on2", v)
		}
		return nil
	})

	_, err = Open(t.Context(), fmt.Sprintf("redis+sentinel://%s/othermaster/0", s.l.Addr()), Options{})
	if err == nil || !strings.Contains(err.Error(), `does not know master "othermaster"`) {
		t.Errorf("Open with an unknown master: %v", err)
	}
	_, err = Open(t.Context(), fmt.Sprintf("redis+sentinel://%s/mymaster/0", deadAddr), Options{})
	if err == nil || !strings.Contains(err.Error(), "no redis sentinel could name master \"mymaster\"") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Open with only a dead sentinel: %v", err)
	}
}
