package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/volume"
)

// open opens the volume named by metaURL for a command.
func (g *globals) open(ctx context.Context, metaURL string) (*volume.Volume, error) {
	pass, err := g.passphrase()
	if err != nil {
		return nil, err
	}
	return volume.Open(ctx, volume.Config{
		MetaURL:         metaURL,
		Passphrase:      pass,
		CredentialsFile: g.credentials,
		Logger:          g.logger(),
	})
}

// withVolume wraps a command body that needs the volume named by args[0]:
// it opens the volume and closes it when the body returns.
func (g *globals) withVolume(run func(cmd *cobra.Command, args []string, v *volume.Volume) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		v, err := g.open(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		defer v.Close(cmd.Context())
		return run(cmd, args, v)
	}
}

func newStatus(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status META_URL",
		Short: "Show a volume's settings (no secrets), live sessions and usage",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			// status needs no passphrase and no bucket: metadata only.
			m, err := meta.Open(ctx, args[0], meta.Options{Logger: g.logger()})
			if err != nil {
				return err
			}
			defer m.Close(ctx)
			f, err := m.Load(ctx)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "volume\t%s\n", f.Name)
			fmt.Fprintf(w, "uuid\t%s\n", f.UUID)
			fmt.Fprintf(w, "metadata\t%s\n", m.Name())
			fmt.Fprintf(w, "bucket\t%s\n", f.Bucket)
			fmt.Fprintf(w, "block size\t%s\n", humanBytes(int64(f.BlockSize)))
			fmt.Fprintf(w, "compression\t%s\n", f.Compression)
			if f.Encryption != nil {
				fmt.Fprintf(w, "encryption\t%s (key wrapped with %s)\n", f.Encryption.Cipher, f.Encryption.KDF)
			} else {
				fmt.Fprintf(w, "encryption\toff\n")
			}
			fmt.Fprintf(w, "created\t%s\n", f.Created.Format(time.RFC3339))
			st, err := m.StatFS(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "used\t%s in %d inodes\n", humanBytes(int64(st.UsedBytes)), st.UsedInodes)
			sess, err := m.Sessions(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "sessions\t%d\n", len(sess))
			w.Flush()
			for _, s := range sess {
				fmt.Fprintf(cmd.OutOrStdout(), "  session %d: host %s pid %d mount %s version %s, heartbeat %s ago\n",
					s.ID, s.Info.Hostname, s.Info.PID, s.Info.MountPoint, s.Info.Version,
					time.Since(s.Heartbeat).Round(time.Second))
			}
			return nil
		},
	}
}

func newInfo(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info META_URL PATH",
		Short: "Show a file's inode, attributes and chunk layout (PATH is inside the volume)",
		Args:  cobra.ExactArgs(2),
		RunE: g.withVolume(func(cmd *cobra.Command, args []string, v *volume.Volume) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			ino, attr, err := v.Resolve(ctx, args[1])
			if err != nil {
				return fmt.Errorf("%s: %w", args[1], err)
			}
			fmt.Fprintf(out, "%s: inode %d, mode %o, uid %d, gid %d, links %d, size %d\n",
				args[1], ino, attr.SMode(), attr.Uid, attr.Gid, attr.Nlink, attr.Size)
			chunks, err := v.Layout(ctx, ino, attr.Size)
			if err != nil {
				return err
			}
			for _, c := range chunks {
				var parts []string
				for _, s := range c.Slices {
					parts = append(parts, fmt.Sprintf("[%d+%d id=%d]", s.Pos, s.Len, s.ID))
				}
				fmt.Fprintf(out, "  chunk %d: %d records: %s\n", c.Index, c.Records, strings.Join(parts, " "))
			}
			return nil
		}),
	}
}

func newGC(g *globals) *cobra.Command {
	var (
		del    bool
		minAge time.Duration
	)
	cmd := &cobra.Command{
		Use:   "gc META_URL",
		Short: "Find block objects no file references (and delete them with --delete)",
		Args:  cobra.ExactArgs(1),
		RunE: g.withVolume(func(cmd *cobra.Command, args []string, v *volume.Volume) error {
			ctx := cmd.Context()
			r, err := v.GC(ctx, del, minAge)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "objects %d, live slices %d, leaked %d (%s), deleted %d, unknown %d, skipped as recent %d, pending %d (slice ids >= %d may still be committed by a live session)\n",
				r.Objects, r.LiveSlices, r.Leaked, humanBytes(r.LeakedBytes), r.Deleted, r.Unknown, r.TooYoung, r.Pending, r.Floor)
			for _, k := range r.LeakedSample {
				fmt.Fprintf(out, "  leaked: %s\n", k)
			}
			if r.Leaked > 0 && !del {
				fmt.Fprintln(out, "run again with --delete to remove the leaked objects")
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&del, "delete", false, "delete leaked objects")
	cmd.Flags().DurationVar(&minAge, "min-age", time.Hour, "leave objects younger than this alone (they may be uploads in flight)")
	return cmd
}

func newFsck(g *globals) *cobra.Command {
	var repairIDs bool
	cmd := &cobra.Command{
		Use:   "fsck META_URL",
		Short: "Verify every slice's blocks exist and every inode is reachable",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			pass, err := g.passphrase()
			if err != nil {
				return err
			}
			v, err := volume.Open(ctx, volume.Config{
				MetaURL:         args[0],
				Passphrase:      pass,
				CredentialsFile: g.credentials,
				Logger:          g.logger(),
				RepairSliceIDs:  repairIDs,
			})
			if err != nil {
				return err
			}
			defer v.Close(ctx)
			if repairIDs {
				c, err := v.Meta.SliceCounter(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "slice id counter is %d, past the bucket's high-water mark\n", c)
			}
			r, err := v.Fsck(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "checked %d slices, %d blocks\n", r.Slices, r.Blocks)
			for _, k := range r.Missing {
				fmt.Fprintf(out, "missing block: %s\n", k)
			}
			for _, p := range r.Tree.Problems {
				fmt.Fprintf(out, "metadata: %s\n", p)
			}
			if !r.OK() {
				return fmt.Errorf("volume %q is damaged: %d missing blocks, %d metadata problems", v.Format.Name, len(r.Missing), len(r.Tree.Problems))
			}
			fmt.Fprintln(out, "volume is consistent")
			return nil
		},
	}
	cmd.Flags().BoolVar(&repairIDs, "repair-ids", false, "raise the metadata's slice id counter past the bucket's high-water mark (after a Redis rollback; stop every client first)")
	return cmd
}
