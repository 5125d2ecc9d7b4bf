package driver

import (
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-fs/skiff/csi/internal/mnt"
	"github.com/skiff-fs/skiff/csi/mounter"
	"github.com/skiff-fs/skiff/sidecar/contract"
)

// checkCapability accepts mount volumes with any known access mode: a
// skiff volume is a shared POSIX file system, so every mode, multi-node
// writers included, is served the same way.
func checkCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return status.Error(codes.InvalidArgument, "no volume capability")
	}
	if c.GetBlock() != nil {
		return status.Error(codes.InvalidArgument, "block volumes are not supported: skiff volumes are file systems (volumeMode: Filesystem)")
	}
	if c.GetMount() == nil {
		return status.Error(codes.InvalidArgument, "the volume capability has no access type: only mount is supported")
	}
	if fs := c.GetMount().GetFsType(); fs != "" && fs != "fuse" && fs != "fuse.skiff" && fs != "skiff" {
		return status.Errorf(codes.InvalidArgument, "fsType %q is not supported (leave it empty)", fs)
	}
	if c.GetAccessMode() == nil || c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_UNKNOWN {
		return status.Error(codes.InvalidArgument, "the volume capability has no access mode")
	}
	if _, ok := csi.VolumeCapability_AccessMode_Mode_name[int32(c.GetAccessMode().GetMode())]; !ok {
		return status.Errorf(codes.InvalidArgument, "unknown access mode %d", c.GetAccessMode().GetMode())
	}
	return nil
}

func readerOnly(c *csi.VolumeCapability) bool {
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}

// cleanSubdir checks a sub-directory of a volume: relative, inside the
// volume. "" and "/" are the volume's root.
func cleanSubdir(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	c := path.Clean("/" + s)
	for _, e := range strings.Split(s, "/") {
		if e == ".." {
			return "", status.Errorf(codes.InvalidArgument, "subdir %q leaves the volume", s)
		}
	}
	return strings.TrimPrefix(c, "/"), nil
}

func parseBool(ctx map[string]string, key string) (bool, error) {
	v, ok := ctx[key]
	if !ok || v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, status.Errorf(codes.InvalidArgument, "volume attribute %s=%q is not a boolean", key, v)
	}
	return b, nil
}

// lockPath checks an unstage or unpublish request's volume id and path
// (what names it in errors), and takes the volume's lock.
func (d *Driver) lockPath(id, what, p string) (string, func(), error) {
	if id == "" {
		return "", nil, status.Error(codes.InvalidArgument, "no volume id")
	}
	abs, err := absPath(what, p)
	if err != nil {
		return "", nil, err
	}
	unlock, err := d.lock(id)
	if err != nil {
		return "", nil, err
	}
	return abs, unlock, nil
}

func absPath(what, p string) (string, error) {
	if p == "" {
		return "", status.Errorf(codes.InvalidArgument, "no %s", what)
	}
	if !filepath.IsAbs(p) {
		return "", status.Errorf(codes.InvalidArgument, "%s %q is not absolute", what, p)
	}
	return filepath.Clean(p), nil
}

// lock takes the volume's lock or fails with Aborted.
func (d *Driver) lock(id string) (func(), error) {
	if !d.vols.tryLock(id) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s is already in progress", id)
	}
	return func() { d.vols.unlock(id) }, nil
}

// NodeStageVolume implements csi.NodeServer: the mounter mounts the
// volume (its sub-directory, read-only when asked) on the staging path,
// served by a client process of its own. The volume's Secret comes as
// the node-stage secret: metaurl, and passphrase and
// google-credentials.json when needed.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "no volume id")
	}
	staging, err := absPath("staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	vctx := req.GetVolumeContext()
	subdir, err := cleanSubdir(vctx[contract.AttrSubdir])
	if err != nil {
		return nil, err
	}
	ro, err := parseBool(vctx, contract.AttrReadOnly)
	if err != nil {
		return nil, err
	}
	secrets := req.GetSecrets()
	metaURL := secrets[contract.SecretKeyMetaURL]
	if metaURL == "" {
		return nil, status.Errorf(codes.InvalidArgument,
			"the node-stage secret has no %q key: set the PersistentVolume's spec.csi.nodeStageSecretRef (or the StorageClass's csi.storage.k8s.io/node-stage-secret-name) to the volume's Secret", contract.SecretKeyMetaURL)
	}
	unlock, err := d.lock(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	opts := contract.ParseOptions(vctx[contract.AttrOptions])
	opts = append(opts, req.GetVolumeCapability().GetMount().GetMountFlags()...)
	_, err = d.mounter.Stage(ctx, mounter.StageRequest{
		VolumeID:          req.GetVolumeId(),
		Path:              staging,
		MetaURL:           metaURL,
		Passphrase:        secrets[contract.SecretKeyPassphrase],
		GoogleCredentials: secrets[contract.SecretKeyGoogleCredentials],
		Subdir:            subdir,
		ReadOnly:          ro || readerOnly(req.GetVolumeCapability()),
		Options:           opts,
	})
	if err != nil {
		return nil, err
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// NodeUnstageVolume implements csi.NodeServer. It refuses while the
// staging mount is still bound into a target path (FailedPrecondition):
// the staging mount is shared by every publication of the volume on the
// node, and goes away with the last.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	staging, unlock, err := d.lockPath(req.GetVolumeId(), "staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	defer unlock()
	binds, err := mnt.Binds(staging)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if len(binds) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is still published at %s: unpublish it first", req.GetVolumeId(), strings.Join(binds, ", "))
	}
	if err := d.mounter.Unstage(ctx, staging); err != nil {
		return nil, err
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume implements csi.NodeServer: a bind mount of the
// staging mount on the target path, read-only when asked.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "no volume id")
	}
	target, err := absPath("target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	staging, err := absPath("staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	ro := req.GetReadonly() || readerOnly(req.GetVolumeCapability())
	unlock, err := d.lock(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()

	stop, ok, err := mnt.Top(staging)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if !ok || !mnt.IsFUSE(stop) {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", req.GetVolumeId(), staging)
	}
	if err := mnt.StatFUSE(staging); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the staging mount of volume %s does not answer: %v", req.GetVolumeId(), err)
	}
	if _, err := os.Stat(target); mnt.IsDead(err) {
		// A publication whose client died without a supervisor.
		if _, err := mnt.DetachFUSE(target); err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
	}
	if top, ok, err := mnt.Top(target); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	} else if ok {
		if top.Major == stop.Major && top.Minor == stop.Minor {
			if slices.Contains(top.MountOptions, "ro") == ro {
				return &csi.NodePublishVolumeResponse{}, nil // published already
			}
			return nil, status.Errorf(codes.AlreadyExists, "volume %s is published at %s with another read-only setting", req.GetVolumeId(), target)
		}
		return nil, status.Errorf(codes.AlreadyExists, "%s is a mount point of something else (%s %s)", target, top.FsType, top.Source)
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "create the target path: %v", err)
	}
	if err := unix.Mount(staging, target, "", unix.MS_BIND, ""); err != nil {
		return nil, status.Errorf(codes.Internal, "bind %s on %s: %v", staging, target, err)
	}
	if ro {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return nil, status.Errorf(codes.Internal, "make the bind on %s read-only: %v", target, err)
		}
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume implements csi.NodeServer: it unmounts whatever is
// mounted on the target path and removes the directory.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target, unlock, err := d.lockPath(req.GetVolumeId(), "target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	defer unlock()
	for range 16 {
		ms, err := mnt.At(target)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		if len(ms) == 0 {
			break
		}
		if err := unix.Unmount(target, 0); err != nil {
			if !errors.Is(err, unix.EBUSY) {
				return nil, status.Errorf(codes.Internal, "unmount %s: %v", target, err)
			}
			d.log.Warn("target path busy: detaching it", "target", target)
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
				return nil, status.Errorf(codes.Internal, "detach %s: %v", target, err)
			}
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "remove the target path: %v", err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats implements csi.NodeServer: bytes and inodes of the
// volume from statfs(2).
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "no volume id")
	}
	p := req.GetVolumePath()
	if p == "" {
		return nil, status.Error(codes.InvalidArgument, "no volume path")
	}
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, status.Errorf(codes.NotFound, "volume path %s does not exist", p)
		}
		if mnt.IsDead(err) {
			return nil, status.Errorf(codes.Unavailable, "the client serving %s is gone", p)
		}
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return nil, status.Errorf(codes.Internal, "statfs %s: %v", p, err)
	}
	if st.Type != mnt.FuseSuperMagic {
		return nil, status.Errorf(codes.NotFound, "volume %s is not mounted at %s", req.GetVolumeId(), p)
	}
	bs := int64(st.Bsize)
	total, free, avail := int64(st.Blocks)*bs, int64(st.Bfree)*bs, int64(st.Bavail)*bs
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: total, Available: avail, Used: total - free},
		{Unit: csi.VolumeUsage_INODES, Total: int64(st.Files), Available: int64(st.Ffree), Used: int64(st.Files) - int64(st.Ffree)},
	}}, nil
}

// NodeGetCapabilities implements csi.NodeServer.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, c := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetInfo implements csi.NodeServer: no topology (every node reaches
// every volume) and no limit on volumes.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.cfg.NodeID}, nil
}
