package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/fuse/supervisor"
)

// adoptFlags are the hand-off flags of skiff mount --supervise: a
// supervisor listens on --handoff-socket, and a new one started with
// --adopt SOCKET takes its live FUSE connection over (without unmounting)
// instead of mounting: how a new skiff version takes over a mount.
type adoptFlags struct {
	adopt   string // socket of the supervisor to take over from
	handOff string // socket this supervisor listens on
}

func addAdoptFlags(cmd *cobra.Command, a *adoptFlags) {
	fl := cmd.Flags()
	fl.StringVar(&a.handOff, "handoff-socket", "", "with --supervise: listen on this unix socket for a new supervisor (skiff mount --supervise --adopt) to take the mount over (default with --adopt: the adopted socket)")
	fl.StringVar(&a.adopt, "adopt", "", "with --supervise: take over the live mount of the supervisor listening on this hand-off socket instead of mounting; MOUNTPOINT must be that mount's")
	fl.MarkHidden("handoff-socket")
	fl.MarkHidden("adopt")
}

// checkMountpoint checks mp for a new mount; an adopted one is already
// mounted.
func (a *adoptFlags) checkMountpoint(mp string) error {
	if a.adopt != "" {
		return nil
	}
	return fuse.CheckMountpoint(mp)
}

// start mounts (supervisor.Start) or adopts (supervisor.Adopt).
func (a *adoptFlags) start(cmd *cobra.Command, cfg supervisor.Config) (*supervisor.Supervisor, error) {
	cfg.HandOffSocket = a.handOff
	if a.adopt == "" {
		return supervisor.Start(cfg)
	}
	if cfg.HandOffSocket == "" {
		cfg.HandOffSocket = a.adopt
	}
	s, err := supervisor.Adopt(context.Background(), cfg, a.adopt)
	if err == nil {
		fmt.Fprintf(cmd.OutOrStdout(), "skiff: adopted the mount on %s from %s (%d open handles)\n", s.Mountpoint(), a.adopt, s.OpenHandles())
	}
	return s, err
}

// ended says how a supervised mount ended without error.
func (a *adoptFlags) ended(s *supervisor.Supervisor, mp string) string {
	if s.HandedOff() {
		return fmt.Sprintf("skiff: %s handed over to a new supervisor (still mounted)", mp)
	}
	return fmt.Sprintf("skiff: %s unmounted", mp)
}
