package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-fs/skiff/csi/internal/sock"
	"github.com/skiff-fs/skiff/csi/mounter"
	"github.com/skiff-fs/skiff/sidecar/contract"
)

// Config configures a Driver. New validates it; zero values mean the
// documented defaults.
type Config struct {
	// Name is the driver name. Default contract.DriverName
	// ("csi.skiff.io").
	Name string
	// Version is reported by GetPluginInfo. Default "dev".
	Version string
	// Node serves the Node service: NodeID and MounterSocket are then
	// required.
	Node bool
	// NodeID is this node's id (the Kubernetes node name).
	NodeID string
	// MounterSocket is the mounter's unix socket (package mounter).
	MounterSocket string
	// Controller serves the Controller service (sub-directory volumes).
	Controller bool
	// TempDir holds short-lived credential files of the controller.
	// Default os.TempDir().
	TempDir string
	// Logger gets the driver's log; requests are logged with their
	// secrets stripped. Default: discard.
	Logger *slog.Logger
	// TrustInputs lets the controller open volumes unrestricted
	// (volume.Config.Restricted): bolt:// META_URLs, directory buckets,
	// any GCS credentials. For tests and development only. Default false.
	TrustInputs bool
}

// Driver implements the CSI Identity, Node and Controller services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer
	csi.UnimplementedControllerServer

	cfg     Config
	log     *slog.Logger
	mounter *mounter.Client // nil without Node
	vols    locks           // volume ids and names with an operation in flight
}

// New validates cfg and returns a driver.
func New(cfg Config) (*Driver, error) {
	if cfg.Name == "" {
		cfg.Name = contract.DriverName
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if !cfg.Node && !cfg.Controller {
		return nil, errors.New("driver: serve the node service, the controller service or both")
	}
	if cfg.Node {
		if cfg.NodeID == "" {
			return nil, errors.New("driver: no node id provided")
		}
		if cfg.MounterSocket == "" {
			return nil, errors.New("driver: no mounter socket provided")
		}
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Driver{cfg: cfg, log: cfg.Logger}
	if cfg.Node {
		d.mounter = mounter.NewClient(cfg.MounterSocket)
	}
	return d, nil
}

// ParseEndpoint returns the socket path of a unix://PATH (or unix:PATH)
// endpoint.
func ParseEndpoint(ep string) (string, error) {
	var p string
	switch {
	case strings.HasPrefix(ep, "unix://"):
		p = strings.TrimPrefix(ep, "unix://")
	case strings.HasPrefix(ep, "unix:"):
		p = strings.TrimPrefix(ep, "unix:")
	default:
		return "", fmt.Errorf("endpoint %q: only unix://PATH is supported", ep)
	}
	if p == "" {
		return "", fmt.Errorf("endpoint %q: no path", ep)
	}
	return filepath.Clean(p), nil
}

// Listen creates the endpoint's socket, replacing a stale one.
func Listen(endpoint string) (net.Listener, error) {
	p, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	// During a rolling update with surge the next pod's csi-node binds
	// the same path first; closing this listener must leave its file.
	return sock.Listen(p, 0)
}

// Serve serves the enabled services on l until ctx ends, then stops
// gracefully (at most 10 s).
func (d *Driver) Serve(ctx context.Context, l net.Listener) error {
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.intercept))
	csi.RegisterIdentityServer(srv, d)
	if d.cfg.Node {
		csi.RegisterNodeServer(srv, d)
	}
	if d.cfg.Controller {
		csi.RegisterControllerServer(srv, d)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	d.log.Info("serving CSI", "address", l.Addr().String(), "node", d.cfg.Node, "controller", d.cfg.Controller, "nodeID", d.cfg.NodeID)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
	}
	<-errc
	return nil
}

// quiet methods are called often by sidecars and logged at debug level only.
var quiet = map[string]bool{
	"/csi.v1.Identity/Probe":                       true,
	"/csi.v1.Identity/GetPluginInfo":               true,
	"/csi.v1.Identity/GetPluginCapabilities":       true,
	"/csi.v1.Node/NodeGetCapabilities":             true,
	"/csi.v1.Node/NodeGetInfo":                     true,
	"/csi.v1.Node/NodeGetVolumeStats":              true,
	"/csi.v1.Controller/ControllerGetCapabilities": true,
}

// intercept logs every call with its secrets stripped and makes sure
// every error is a status error with an explicit code.
func (d *Driver) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	d.log.Debug("call", "method", info.FullMethod, "request", stripSecrets(req))
	resp, err := handler(ctx, req)
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Error(codes.Internal, err.Error())
		}
		st := status.Convert(err)
		d.log.Warn("call failed", "method", info.FullMethod, "code", st.Code().String(), "message", st.Message(),
			"duration", time.Since(start), "request", stripSecrets(req))
		return nil, err
	}
	if !quiet[info.FullMethod] {
		d.log.Info("call", "method", info.FullMethod, "duration", time.Since(start), "request", stripSecrets(req))
	}
	return resp, nil
}
