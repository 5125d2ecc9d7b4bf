package driver_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/skiff-fs/skiff/csi/driver"
	"github.com/skiff-fs/skiff/csi/internal/mnt"
	"github.com/skiff-fs/skiff/internal/syncbuf"
)

// mountChecks checks, from the client side, every successful
// NodeStageVolume and NodePublishVolume that csi-sanity makes: the
// staging path must be a live FUSE mount of type fuse.skiff (a client
// process of the mounter, not a bind of something else), and the target
// path a bind of it.
type mountChecks struct {
	t  *testing.T
	mu sync.Mutex
	// counts of checked calls
	stages, publishes int
}

func (c *mountChecks) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err != nil {
		return err
	}
	switch r := req.(type) {
	case *csi.NodeStageVolumeRequest:
		top, ok, merr := mnt.Top(r.GetStagingTargetPath())
		switch {
		case merr != nil:
			c.t.Errorf("NodeStageVolume: %v", merr)
		case !ok || top.FsType != "fuse.skiff":
			c.t.Errorf("NodeStageVolume %s: staging path %s is not a fuse.skiff mount (%+v)", r.GetVolumeId(), r.GetStagingTargetPath(), top)
		default:
			if serr := mnt.StatFUSE(r.GetStagingTargetPath()); serr != nil {
				c.t.Errorf("NodeStageVolume: %v", serr)
			}
		}
		c.mu.Lock()
		c.stages++
		c.mu.Unlock()
	case *csi.NodePublishVolumeRequest:
		st, _, _ := mnt.Top(r.GetStagingTargetPath())
		tt, ok, merr := mnt.Top(r.GetTargetPath())
		if merr != nil || !ok || tt.Major != st.Major || tt.Minor != st.Minor || tt.FsType != "fuse.skiff" {
			c.t.Errorf("NodePublishVolume: target %s is not a bind of the staging mount: %+v vs %+v (%v)", r.GetTargetPath(), tt, st, merr)
		}
		c.mu.Lock()
		c.publishes++
		c.mu.Unlock()
	}
	return nil
}

// TestSanity runs csi-sanity against the driver (node and controller
// services on one socket) and a mounter whose children are real
// `skiff mount --supervise` processes serving a Redis volume.
func TestSanity(t *testing.T) {
	metaURL := newVolume(t)
	dir := t.TempDir()
	detachAllUnder(t, dir)
	logs, out := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("driver and mounter log:\n%s\nskiff output:\n%s", logs, out)
		}
	})
	msock, _ := startMounter(t, dir, logs, out)

	d, err := driver.New(driver.Config{Node: true, Controller: true, NodeID: "node-1", MounterSocket: msock,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TrustInputs: true, // blocks in a directory
	})
	if err != nil {
		t.Fatal(err)
	}
	ep := "unix://" + filepath.Join(dir, "csi.sock")
	l, err := driver.Listen(ep)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("driver: %v", err)
		}
	})

	checks := &mountChecks{t: t}
	cfg := sanity.NewTestConfig()
	cfg.Address = ep
	cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithChainUnaryInterceptor(checks.intercept)}
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.IdempotentCount = 2
	cfg.TestVolumeParameters = map[string]string{driver.ParamRoot: "pvcs"}
	// The same Secret for every call that takes one, as a StorageClass
	// naming one Secret for all of them passes it.
	var secrets strings.Builder
	for _, k := range []string{"CreateVolumeSecret", "DeleteVolumeSecret", "ControllerValidateVolumeCapabilitiesSecret", "NodeStageVolumeSecret", "NodePublishVolumeSecret"} {
		fmt.Fprintf(&secrets, "%s:\n  metaurl: %q\n", k, metaURL)
	}
	cfg.SecretsFile = filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(cfg.SecretsFile, []byte(secrets.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	sanity.Test(t, cfg)

	t.Logf("checked %d stages and %d publishes: fuse.skiff mounts and binds of them", checks.stages, checks.publishes)
	if checks.stages == 0 || checks.publishes == 0 {
		t.Errorf("csi-sanity staged %d and published %d volumes: the node tests did not run", checks.stages, checks.publishes)
	}
	noMountsUnder(t, dir)
	if strings.Contains(logs.String(), redisPassword) {
		t.Errorf("the driver or the mounter logged the META_URL's password")
	}
}
