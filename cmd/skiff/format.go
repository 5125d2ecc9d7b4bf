package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/redact"
)

func newFormat(g *globals) *cobra.Command {
	var (
		fc        volume.FormatConfig
		blockSize string
	)
	cmd := &cobra.Command{
		Use:   "format [flags] META_URL NAME",
		Short: "Create a volume (or re-write a volume's settings with --force)",
		Long: `Create a volume named NAME whose metadata lives at META_URL:
  redis://[user:pass@]host:port/db[?prefix=NAME], rediss://..., redis+sentinel://h:p,h:p/master/db,
  or bolt://PATH for the embedded single-node engine.
Blocks go to --bucket (gs://bucket[/prefix], file:///dir or a plain path); bolt://
volumes may omit it and keep blocks in a directory beside the metadata file.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			fc.MetaURL, fc.Name = args[0], args[1]
			bs, err := parseSize(blockSize)
			if err != nil {
				return fmt.Errorf("--block-size: %w", err)
			}
			fc.BlockSize = uint32(bs)
			fc.CredentialsFile = g.credentials
			if fc.Encrypt {
				if fc.Passphrase, err = g.passphrase(); err != nil {
					return err
				}
			}
			f, err := volume.Create(cmd.Context(), fc)
			if err != nil {
				return err
			}
			enc := "off"
			if f.Encryption != nil {
				enc = f.Encryption.Cipher
			}
			fmt.Fprintf(cmd.OutOrStdout(), "formatted volume %q (uuid %s)\n  metadata: %s\n  bucket:   %s\n  block size %s, compression %s, encryption %s\n",
				f.Name, f.UUID, redact.URL(fc.MetaURL), f.Bucket, humanBytes(int64(f.BlockSize)), f.Compression, enc)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&fc.Bucket, "bucket", "", "object store URL: gs://bucket[/prefix], file:///dir or a path (default for bolt://: beside the metadata file)")
	fl.StringVar(&blockSize, "block-size", "4M", "block size, a power of two from 64K to 16M")
	fl.StringVar(&fc.Compression, "compress", "none", "block compression: none, lz4 or zstd")
	fl.BoolVar(&fc.Encrypt, "encrypt", false, "encrypt blocks; the passphrase comes from $SKIFF_PASSPHRASE or --passphrase-file")
	fl.BoolVar(&fc.Force, "force", false, "re-write the settings of an existing volume, or take over a bucket prefix")
	return cmd
}

// parseSize parses "4M", "64K", "1G" or a plain byte count.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K':
			mult, s = 1<<10, s[:n-1]
		case 'M':
			mult, s = 1<<20, s[:n-1]
		case 'G':
			mult, s = 1<<30, s[:n-1]
		case 'T':
			mult, s = 1<<40, s[:n-1]
		}
	}
	var v int64
	if _, err := fmt.Sscanf(s, "%d", &v); err != nil || v < 0 || fmt.Sprint(v) != s {
		return 0, fmt.Errorf("%q is not a size (examples: 4M, 64K, 1G)", s)
	}
	return v * mult, nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
