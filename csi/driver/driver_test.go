package driver

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStripSecrets(t *testing.T) {
	const secret = "redis://:hunter2@redis:6379/1"
	for name, req := range map[string]any{
		"stage": &csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: "/s",
			Secrets: map[string]string{"metaurl": secret, "passphrase": secret}, VolumeContext: map[string]string{"subdir": "a"}},
		"create": &csi.CreateVolumeRequest{Name: "pvc", Secrets: map[string]string{"metaurl": secret}},
		"delete": &csi.DeleteVolumeRequest{VolumeId: "v", Secrets: map[string]string{"metaurl": secret}},
		"validate": &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "v",
			Secrets: map[string]string{"metaurl": secret}},
	} {
		got := stripSecrets(req)
		if strings.Contains(got, "hunter2") || !strings.Contains(got, stripped) {
			t.Errorf("%s: %s", name, got)
		}
		if name == "stage" && !strings.Contains(got, `"subdir":"a"`) {
			t.Errorf("stage: non-secret fields lost: %s", got)
		}
	}
	if got := stripSecrets("redis://:hunter2@x"); strings.Contains(got, "hunter2") {
		t.Errorf("non-message printed: %s", got)
	}
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func newTestDriver(t *testing.T) *Driver {
	t.Helper()
	d, err := New(Config{Node: true, Controller: true, NodeID: "n", MounterSocket: filepath.Join(t.TempDir(), "none.sock")})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestBusyVolumeAborted: a second operation on a volume while one is in
// flight is refused with Aborted.
func TestBusyVolumeAborted(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	dir := t.TempDir()
	rw := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	sec := map[string]string{"metaurl": "redis://127.0.0.1:1/1"}
	const id = "csi/pvc-1"
	if !d.vols.tryLock(id) || !d.vols.tryLock("name/pvc-1") {
		t.Fatal("lock")
	}
	calls := map[string]func() error{
		"NodeStageVolume": func() error {
			_, err := d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: dir, VolumeCapability: rw, Secrets: sec})
			return err
		},
		"NodeUnstageVolume": func() error {
			_, err := d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: dir})
			return err
		},
		"NodePublishVolume": func() error {
			_, err := d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: dir, TargetPath: dir + "/t", VolumeCapability: rw})
			return err
		},
		"NodeUnpublishVolume": func() error {
			_, err := d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: dir + "/t"})
			return err
		},
		"CreateVolume": func() error {
			_, err := d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1", VolumeCapabilities: []*csi.VolumeCapability{rw}, Secrets: sec})
			return err
		},
		"DeleteVolume": func() error {
			_, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: sec})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); status.Code(err) != codes.Aborted {
			t.Errorf("%s on a busy volume: %v, want Aborted", name, err)
		}
	}
	d.vols.unlock(id)
	// Free again: the call goes on to the mounter, which is not there.
	if err := calls["NodeStageVolume"](); status.Code(err) != codes.Unavailable {
		t.Errorf("NodeStageVolume without a mounter: %v, want Unavailable", err)
	}
}

func TestInvalidArguments(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	dir := t.TempDir()
	rw := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	block := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: rw.AccessMode}
	sec := map[string]string{"metaurl": "redis://:pw-in-url@127.0.0.1:1/1"}
	stage := func(r *csi.NodeStageVolumeRequest) error { _, err := d.NodeStageVolume(ctx, r); return err }
	create := func(r *csi.CreateVolumeRequest) error { _, err := d.CreateVolume(ctx, r); return err }
	for name, tc := range map[string]struct {
		err  error
		code codes.Code
	}{
		"stage: block": {stage(&csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: dir, VolumeCapability: block, Secrets: sec}), codes.InvalidArgument},
		"stage: no access mode": {stage(&csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: dir,
			VolumeCapability: &csi.VolumeCapability{AccessType: rw.AccessType}, Secrets: sec}), codes.InvalidArgument},
		"stage: relative path": {stage(&csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: "rel", VolumeCapability: rw, Secrets: sec}), codes.InvalidArgument},
		"stage: no metaurl":    {stage(&csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: dir, VolumeCapability: rw}), codes.InvalidArgument},
		"stage: subdir escapes": {stage(&csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: dir, VolumeCapability: rw, Secrets: sec,
			VolumeContext: map[string]string{"subdir": "a/../../etc"}}), codes.InvalidArgument},
		"stage: bad readOnly": {stage(&csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: dir, VolumeCapability: rw, Secrets: sec,
			VolumeContext: map[string]string{"readOnly": "maybe"}}), codes.InvalidArgument},
		"create: name with slash": {create(&csi.CreateVolumeRequest{Name: "a/b", VolumeCapabilities: []*csi.VolumeCapability{rw}, Secrets: sec}), codes.InvalidArgument},
		"create: unknown parameter": {create(&csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rw}, Secrets: sec,
			Parameters: map[string]string{"replicas": "3"}}), codes.InvalidArgument},
		"create: bad onDelete": {create(&csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rw}, Secrets: sec,
			Parameters: map[string]string{"onDelete": "archive"}}), codes.InvalidArgument},
		"create: range": {create(&csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rw}, Secrets: sec,
			CapacityRange: &csi.CapacityRange{RequiredBytes: 10, LimitBytes: 5}}), codes.OutOfRange},
		"create: no metaurl":         {create(&csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rw}}), codes.InvalidArgument},
		"create: unreachable volume": {create(&csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{rw}, Secrets: sec}), codes.Unavailable},
	} {
		if got := status.Code(tc.err); got != tc.code {
			t.Errorf("%s: %v, want %s", name, tc.err, tc.code)
		}
		if tc.err != nil && strings.Contains(tc.err.Error(), "pw-in-url") {
			t.Errorf("%s: the error shows the META_URL's password: %v", name, tc.err)
		}
	}
}
