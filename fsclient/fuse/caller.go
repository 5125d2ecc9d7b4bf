package fuse

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"sync"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skiff-fs/skiff/fsclient/vfs"
)

// groupTTL is how long the supplementary groups of a process are cached.
const groupTTL = time.Second

// groupCache remembers the supplementary groups of calling processes,
// read from /proc/<pid>/status, for groupTTL.
type groupCache struct {
	procDir string
	mu      struct {
		sync.Mutex
		m       map[groupKey]groupEntry
		cleaned time.Time
	}
}

type groupKey struct{ pid, uid, gid uint32 }

type groupEntry struct {
	gids []uint32
	at   time.Time
}

func newGroupCache() *groupCache {
	g := &groupCache{procDir: "/proc"}
	g.mu.m = make(map[groupKey]groupEntry)
	return g
}

// caller builds the identity of a request: the kernel's uid and gid (the
// primary group, Gids[0]) and the process's supplementary groups. When
// they cannot be read (pid 0, a process in another pid namespace, an
// exited process) only the primary group counts.
func (g *groupCache) caller(c *gofuse.Caller, umask uint32) vfs.Caller {
	return vfs.Caller{Uid: c.Uid, Gids: g.gids(c.Pid, c.Uid, c.Gid), Pid: c.Pid, Umask: uint16(umask & 0o7777)}
}

func (g *groupCache) gids(pid, uid, gid uint32) []uint32 {
	if pid == 0 {
		return []uint32{gid}
	}
	k := groupKey{pid, uid, gid}
	now := time.Now()
	g.mu.Lock()
	e, ok := g.mu.m[k]
	if now.Sub(g.mu.cleaned) > 10*groupTTL {
		for k, e := range g.mu.m {
			if now.Sub(e.at) > groupTTL {
				delete(g.mu.m, k)
			}
		}
		g.mu.cleaned = now
	}
	g.mu.Unlock()
	if ok && now.Sub(e.at) < groupTTL {
		return e.gids
	}
	gids := []uint32{gid}
	for _, s := range g.read(pid) {
		if s != gid {
			gids = append(gids, s)
		}
	}
	g.mu.Lock()
	g.mu.m[k] = groupEntry{gids: gids, at: now}
	g.mu.Unlock()
	return gids
}

// read returns the "Groups:" of /proc/<pid>/status (nil when unreadable).
func (g *groupCache) read(pid uint32) []uint32 {
	b, err := os.ReadFile(g.procDir + "/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, ok := bytes.CutPrefix(sc.Bytes(), []byte("Groups:"))
		if !ok {
			continue
		}
		var out []uint32
		for _, f := range bytes.Fields(line) {
			if n, err := strconv.ParseUint(string(f), 10, 32); err == nil {
				out = append(out, uint32(n))
			}
		}
		return out
	}
	return nil
}
