package driver

import (
	"context"
	"errors"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/redact"
	"github.com/skiff-fs/skiff/sidecar/contract"
)

// StorageClass parameters of dynamic provisioning.
const (
	// ParamRoot is the directory of the volume that holds the PVCs'
	// directories ("" or "/": the volume's root). Created when missing.
	ParamRoot = "root"
	// ParamOnDelete says what DeleteVolume does with the directory:
	// OnDeleteDelete (default) removes it with everything in it,
	// OnDeleteRetain leaves it.
	ParamOnDelete  = "onDelete"
	OnDeleteDelete = "delete"
	OnDeleteRetain = "retain"
)

// Extended attributes recorded on each provisioned directory. trusted.*
// names can be changed by root only.
const (
	// XattrCapacity is the requested capacity in bytes (decimal), for
	// quota enforcement when quotas land.
	XattrCapacity = "trusted.skiff.csi.capacity"
	// XattrOnDelete is the directory's ParamOnDelete.
	XattrOnDelete = "trusted.skiff.csi.onDelete"
)

// ControllerGetCapabilities implements csi.ControllerServer.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}},
	}}}, nil
}

// openVolume opens the volume the secrets' metaurl names, without a
// session (the controller serves no files). The caller closes it.
func (d *Driver) openVolume(ctx context.Context, secrets map[string]string) (*volume.Volume, func(), error) {
	metaURL := secrets[contract.SecretKeyMetaURL]
	if metaURL == "" {
		return nil, nil, status.Errorf(codes.InvalidArgument,
			"the secret has no %q key: set csi.storage.k8s.io/provisioner-secret-name and -namespace in the StorageClass to the volume's Secret", contract.SecretKeyMetaURL)
	}
	cfg := volume.Config{MetaURL: metaURL, Passphrase: []byte(secrets[contract.SecretKeyPassphrase]), Logger: d.log, Restricted: !d.cfg.TrustInputs}
	var credFile string
	if c := secrets[contract.SecretKeyGoogleCredentials]; c != "" {
		f, err := os.CreateTemp(d.cfg.TempDir, "skiff-csi-credentials-*.json")
		if err != nil {
			return nil, nil, status.Errorf(codes.Internal, "credentials file: %v", err)
		}
		credFile = f.Name()
		_, err = f.WriteString(c)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(credFile)
			return nil, nil, status.Errorf(codes.Internal, "credentials file: %v", err)
		}
		cfg.CredentialsFile = credFile
	}
	v, err := volume.Open(ctx, cfg)
	if err != nil {
		if credFile != "" {
			os.Remove(credFile)
		}
		return nil, nil, status.Errorf(codes.Unavailable, "open the volume at %s: %v", redact.URL(metaURL), err)
	}
	return v, func() {
		if err := v.Close(context.WithoutCancel(ctx)); err != nil {
			d.log.Error("close the volume", "err", err)
		}
		if credFile != "" {
			os.Remove(credFile)
		}
	}, nil
}

// errCode maps a file system error to a gRPC status.
func errCode(what string, err error) error {
	var code codes.Code
	switch {
	case errors.Is(err, syscall.ENOENT):
		code = codes.NotFound
	case errors.Is(err, syscall.EEXIST):
		code = codes.AlreadyExists
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENAMETOOLONG):
		code = codes.InvalidArgument
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		code = codes.ResourceExhausted
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	default:
		code = codes.Internal
	}
	return status.Errorf(code, "%s: %v", what, err)
}

// volumeID is "<volume name>/<sub-directory>".
func volumeID(fsName, subdir string) string { return fsName + "/" + subdir }

// parseVolumeID splits a volume id; ok is false for ids this driver never
// made.
func parseVolumeID(id string) (fsName, subdir string, ok bool) {
	fsName, subdir, ok = strings.Cut(id, "/")
	if !ok || fsName == "" || subdir == "" {
		return "", "", false
	}
	c, err := cleanSubdir(subdir)
	if err != nil || c != subdir {
		return "", "", false
	}
	return fsName, subdir, true
}

func checkCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return status.Error(codes.InvalidArgument, "no volume capabilities")
	}
	for _, c := range caps {
		if err := checkCapability(c); err != nil {
			return err
		}
	}
	return nil
}

// CreateVolume implements csi.ControllerServer: it makes the directory
// <root>/<name> in the volume the provisioner secret's metaurl names and
// records the capacity on it. A second call with the same name returns
// the same volume if the capacity fits, AlreadyExists if not.
func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "no volume name")
	}
	if strings.Contains(name, "/") || name == "." || name == ".." || len(name) > 255 {
		return nil, status.Errorf(codes.InvalidArgument, "volume name %q is not a valid directory name", name)
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Error(codes.InvalidArgument, "volume content sources (snapshots, clones) are not supported")
	}
	required, limit := req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes()
	if required < 0 || limit < 0 || limit > 0 && required > limit {
		return nil, status.Errorf(codes.OutOfRange, "capacity range [%d, %d] cannot be satisfied", required, limit)
	}
	capacity := required
	if capacity == 0 {
		capacity = limit
	}
	root, onDelete := "", OnDeleteDelete
	vctx := map[string]string{}
	for k, v := range req.GetParameters() {
		switch {
		case k == ParamRoot:
			r, err := cleanSubdir(v)
			if err != nil {
				return nil, err
			}
			root = r
		case k == ParamOnDelete:
			if v != OnDeleteDelete && v != OnDeleteRetain {
				return nil, status.Errorf(codes.InvalidArgument, "parameter %s=%q: want %q or %q", ParamOnDelete, v, OnDeleteDelete, OnDeleteRetain)
			}
			onDelete = v
		case k == contract.AttrReadOnly || k == contract.AttrOptions:
			vctx[k] = v // passed on to NodeStageVolume
		case strings.HasPrefix(k, "csi.storage.k8s.io/"):
			// the external-provisioner's own keys
		default:
			return nil, status.Errorf(codes.InvalidArgument, "unknown StorageClass parameter %q (known: %s, %s, %s, %s)", k, ParamRoot, ParamOnDelete, contract.AttrReadOnly, contract.AttrOptions)
		}
	}
	unlock, err := d.lock("name/" + name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, closeVol, err := d.openVolume(ctx, req.GetSecrets())
	if err != nil {
		return nil, err
	}
	defer closeVol()

	rc := meta.RootCaller()
	parent, err := mkdirAll(ctx, v, root)
	if err != nil {
		return nil, err
	}
	sub := path.Join(root, name)
	ino, _, err := v.Meta.Lookup(ctx, rc, parent, name)
	if errors.Is(err, syscall.ENOENT) {
		ino, _, err = v.Meta.Mkdir(ctx, rc, parent, name, 0o777)
		if errors.Is(err, syscall.EEXIST) { // made by a racing controller
			ino, _, err = v.Meta.Lookup(ctx, rc, parent, name)
		}
	}
	if err != nil {
		return nil, errCode("create directory "+sub, err)
	}
	rec, err := v.Meta.GetXattr(ctx, rc, ino, XattrCapacity)
	switch {
	case errors.Is(err, syscall.ENODATA):
		// New, or made by a call that failed before recording.
		if err := v.Meta.SetXattr(ctx, rc, ino, XattrOnDelete, []byte(onDelete), 0); err != nil {
			return nil, errCode("record the delete policy of "+sub, err)
		}
		if err := v.Meta.SetXattr(ctx, rc, ino, XattrCapacity, []byte(strconv.FormatInt(capacity, 10)), 0); err != nil {
			return nil, errCode("record the capacity of "+sub, err)
		}
	case err != nil:
		return nil, errCode("read the capacity of "+sub, err)
	default:
		had, perr := strconv.ParseInt(string(rec), 10, 64)
		if perr != nil {
			return nil, status.Errorf(codes.Internal, "directory %s records capacity %q", sub, rec)
		}
		if required > 0 && had < required || limit > 0 && had > limit {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s exists with capacity %d, outside the requested range [%d, %d]", name, had, required, limit)
		}
		capacity = had
	}
	vctx[contract.AttrSubdir] = sub
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      volumeID(v.Format.Name, sub),
		CapacityBytes: capacity,
		VolumeContext: vctx,
	}}, nil
}

// mkdirAll resolves dir (relative to the volume's root), making the
// missing directories, and returns its inode.
func mkdirAll(ctx context.Context, v *volume.Volume, dir string) (meta.Ino, error) {
	rc := meta.RootCaller()
	ino := meta.RootIno
	for _, name := range strings.Split(dir, "/") {
		if name == "" {
			continue
		}
		next, attr, err := v.Meta.Lookup(ctx, rc, ino, name)
		if errors.Is(err, syscall.ENOENT) {
			next, attr, err = v.Meta.Mkdir(ctx, rc, ino, name, 0o755)
			if errors.Is(err, syscall.EEXIST) {
				next, attr, err = v.Meta.Lookup(ctx, rc, ino, name)
			}
		}
		if err != nil {
			return 0, errCode("create the root directory "+dir, err)
		}
		if attr.Typ != meta.TypeDir {
			return 0, status.Errorf(codes.InvalidArgument, "%s in the volume is not a directory", dir)
		}
		ino = next
	}
	return ino, nil
}

// DeleteVolume implements csi.ControllerServer: it removes the volume's
// directory with everything in it, or leaves it when it was created with
// onDelete=retain. A volume that does not exist is deleted already.
func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "no volume id")
	}
	fsName, sub, ok := parseVolumeID(id)
	if !ok {
		d.log.Info("DeleteVolume of an id this driver never made: nothing to do", "volumeID", id)
		return &csi.DeleteVolumeResponse{}, nil
	}
	unlock, err := d.lock(id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, closeVol, err := d.openVolume(ctx, req.GetSecrets())
	if err != nil {
		return nil, err
	}
	defer closeVol()
	if v.Format.Name != fsName {
		return nil, status.Errorf(codes.InvalidArgument, "volume id %s names volume %q, but the secret's metaurl opens volume %q", id, fsName, v.Format.Name)
	}
	dir, name := path.Split(sub)
	parent, _, err := v.Resolve(ctx, dir)
	if errors.Is(err, syscall.ENOENT) {
		return &csi.DeleteVolumeResponse{}, nil
	}
	if err != nil {
		return nil, errCode("resolve "+dir, err)
	}
	rc := meta.RootCaller()
	ino, attr, err := v.Meta.Lookup(ctx, rc, parent, name)
	if errors.Is(err, syscall.ENOENT) {
		return &csi.DeleteVolumeResponse{}, nil
	}
	if err != nil {
		return nil, errCode("look up "+sub, err)
	}
	if attr.Typ != meta.TypeDir {
		return nil, status.Errorf(codes.FailedPrecondition, "%s in volume %s is not a directory", sub, fsName)
	}
	if p, err := v.Meta.GetXattr(ctx, rc, ino, XattrOnDelete); err == nil && string(p) == OnDeleteRetain {
		d.log.Info("volume retained", "volumeID", id)
		return &csi.DeleteVolumeResponse{}, nil
	}
	if err := removeAll(ctx, v.Meta, ino); err != nil {
		return nil, errCode("remove the contents of "+sub, err)
	}
	if err := v.Meta.Rmdir(ctx, rc, parent, name); err != nil && !errors.Is(err, syscall.ENOENT) {
		return nil, errCode("remove "+sub, err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// removeAll removes everything in the directory dir (files still open
// elsewhere live on until closed, as POSIX says).
func removeAll(ctx context.Context, m *meta.Meta, dir meta.Ino) error {
	rc := meta.RootCaller()
	es, err := m.Readdir(ctx, rc, dir, false)
	if err != nil {
		return err
	}
	for _, e := range es {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.Attr.Typ == meta.TypeDir {
			if err := removeAll(ctx, m, e.Ino); err != nil {
				return err
			}
			err = m.Rmdir(ctx, rc, dir, e.Name)
		} else {
			err = m.Unlink(ctx, rc, dir, e.Name)
		}
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
	}
	return nil
}

// ValidateVolumeCapabilities implements csi.ControllerServer.
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "no volume id")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no volume capabilities")
	}
	fsName, sub, ok := parseVolumeID(id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", id)
	}
	v, closeVol, err := d.openVolume(ctx, req.GetSecrets())
	if err != nil {
		return nil, err
	}
	defer closeVol()
	if v.Format.Name != fsName {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist in volume %q", id, v.Format.Name)
	}
	if _, attr, err := v.Resolve(ctx, sub); err != nil {
		return nil, errCode("volume "+id, err)
	} else if attr.Typ != meta.TypeDir {
		return nil, status.Errorf(codes.NotFound, "volume %s is not a directory", id)
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}
