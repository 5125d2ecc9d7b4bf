package fuse_test

import (
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
)

func TestMain(m *testing.M) { fusetest.Main(m) }

// TestPosixtest runs every test of go-fuse's posixtest suite, each on a
// fresh mount of a bbolt volume.
func TestPosixtest(t *testing.T) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		// FcntlFlockLocksFile expects EAGAIN when one process takes a
		// read lock over its own write lock through a second descriptor.
		// POSIX locks belong to the process, so that succeeds on ext4 and
		// tmpfs too (checked with this very test on ext4): the test
		// assumes the open-file-description locks of go-fuse's loopback.
		// TestLockConflict checks the conflict between two processes.
		if name == "FcntlFlockLocksFile" {
			continue
		}
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			m := fusetest.NewBolt(t)
			posixtest.All[name](t, m.Dir)
		})
	}
}
