package vfs_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// redisCmd sends one command and returns the reply (bulk string or status).
func redisCmd(t testing.TB, addr string, args ...string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	line = strings.TrimRight(line, "\r\n")
	switch line[0] {
	case '+':
		return line[1:]
	case '$':
		n, _ := strconv.Atoi(line[1:])
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	t.Fatalf("redis reply %q", line)
	return ""
}

// commandCalls parses INFO commandstats into command -> calls.
func commandCalls(t testing.TB, addr string) map[string]int {
	out := map[string]int{}
	for _, l := range strings.Split(redisCmd(t, addr, "INFO", "commandstats"), "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "cmdstat_") {
			continue
		}
		name, rest, _ := strings.Cut(strings.TrimPrefix(l, "cmdstat_"), ":")
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				out[name], _ = strconv.Atoi(v)
			}
		}
	}
	return out
}

// TestSequentialIOMetaCalls counts the Redis commands a sequential write
// and read of a file through a mount cost: they must not grow with the
// number of FUSE requests (1 MiB each). Before the open file kept the
// answer for security.capability, every WRITE cost a GETXATTR: a GET of
// the attributes and an HGET of the xattr.
func TestSequentialIOMetaCalls(t *testing.T) {
	srv := testredis.Start(t)
	m := fusetest.Start(t, fusetest.Config{MetaURL: srv.URL()})
	const size = 64 << 20
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	p := m.Path("f")
	redisCmd(t, srv.Addr(), "CONFIG", "RESETSTAT")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < size; off += len(buf) {
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	w := commandCalls(t, srv.Addr())
	t.Logf("write of 64 MiB in 1 MiB writes: %v", w)
	if n := w["get"] + w["hget"]; n > 16 {
		t.Errorf("write of 64 MiB in 1 MiB writes: %d GET and HGET commands (%v); want at most 16", n, w)
	}
	f, err = os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	redisCmd(t, srv.Addr(), "CONFIG", "RESETSTAT")
	n, err := io.CopyBuffer(io.Discard, f, buf)
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v; want %d", n, err, size)
	}
	r := commandCalls(t, srv.Addr())
	t.Logf("read of 64 MiB: %v", r)
	if n := r["get"] + r["hget"]; n > 16 {
		t.Errorf("read of 64 MiB: %d GET and HGET commands (%v); want at most 16", n, r)
	}
}

// BenchmarkSequentialIO writes and reads a file through a mount of a
// bbolt and of a Redis volume in 1 MiB requests (the read after dropping
// the file's pages from the kernel's cache), reporting MB/s; compare
// the two side by side:
//
//	go test -run '^$' -bench SequentialIO -benchtime 3x -count 3 ./fsclient/vfs/
func BenchmarkSequentialIO(b *testing.B) {
	const size = 256 << 20
	for _, kind := range []string{"bolt", "redis"} {
		for _, op := range []string{"write", "read"} {
			b.Run(kind+"/"+op, func(b *testing.B) {
				cfg := fusetest.Config{}
				if kind == "redis" {
					cfg.MetaURL = testredis.Start(b).URL()
				}
				m := fusetest.Start(b, cfg)
				buf := make([]byte, 1<<20)
				for i := range buf {
					buf[i] = byte(i * 7)
				}
				write := func(p string) {
					f, err := os.Create(p)
					if err != nil {
						b.Fatal(err)
					}
					for off := 0; off < size; off += len(buf) {
						if _, err := f.Write(buf); err != nil {
							b.Fatal(err)
						}
					}
					if err := f.Close(); err != nil {
						b.Fatal(err)
					}
				}
				if op == "read" {
					write(m.Path("f"))
				}
				b.SetBytes(size)
				b.ResetTimer()
				for i := range b.N {
					if op == "write" {
						write(m.Path(fmt.Sprint("f", i)))
						continue
					}
					b.StopTimer()
					f, err := os.Open(m.Path("f"))
					if err != nil {
						b.Fatal(err)
					}
					unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
					b.StartTimer()
					n, err := io.CopyBuffer(io.Discard, f, buf)
					f.Close()
					if err != nil || n != size {
						b.Fatal(n, err)
					}
				}
			})
		}
	}
}
