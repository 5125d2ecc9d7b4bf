package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/fsclient/cache"
)

// cacheFlags are the block cache options shared by skiff mount and skiff
// warmup.
type cacheFlags struct {
	dir       string
	size      string
	memSize   string
	freeRatio float64
	writes    bool
	shared    bool
}

// defaultCacheDir is where the block cache lives unless --cache-dir says
// otherwise: $SKIFF_CACHE_DIR, else /var/cache/skiff for root (the pod's
// emptyDir skiff-cache is mounted there), else $XDG_CACHE_HOME/skiff or
// ~/.cache/skiff. Each volume gets a sub-directory named by its uuid.
func defaultCacheDir() string {
	if d := os.Getenv("SKIFF_CACHE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/skiff"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "skiff")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("skiff-cache-%d", os.Geteuid()))
}

// addCacheFlags adds the cache flags to cmd.
func addCacheFlags(cmd *cobra.Command, c *cacheFlags) {
	fl := cmd.Flags()
	fl.StringVar(&c.dir, "cache-dir", defaultCacheDir(), "local block cache directory (one sub-directory per volume uuid)")
	fl.StringVar(&c.size, "cache-size", "10G", "block cache size limit on disk; 0 turns the cache off")
	fl.StringVar(&c.memSize, "cache-mem", "256M", "memory for hot blocks; 0 turns the memory tier off")
	fl.Float64Var(&c.freeRatio, "cache-free-ratio", 0.1, "part of the cache disk always left free")
	fl.BoolVar(&c.writes, "cache-writes", false, "also cache blocks as they are written")
	fl.BoolVar(&c.shared, "cache-shared", false, "the cache directory is readable by others: keep cached blocks in their stored (encrypted) form instead of decoded")
}

// config turns the flags into a cache configuration; nil means no cache
// (--cache-size 0).
func (c *cacheFlags) config(log *slog.Logger) (*cache.Config, error) {
	size, err := parseSize(c.size)
	if err != nil {
		return nil, fmt.Errorf("--cache-size: %w", err)
	}
	if size == 0 {
		return nil, nil
	}
	mem, err := parseSize(c.memSize)
	if err != nil {
		return nil, fmt.Errorf("--cache-mem: %w", err)
	}
	if mem == 0 {
		mem = -1
	}
	if c.freeRatio < 0 || c.freeRatio >= 1 {
		return nil, fmt.Errorf("--cache-free-ratio %g must be at least 0 and below 1", c.freeRatio)
	}
	ratio := c.freeRatio
	if ratio == 0 {
		ratio = -1
	}
	if c.dir == "" {
		return nil, fmt.Errorf("--cache-dir is empty: give a directory, or --cache-size 0 to turn the cache off")
	}
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return nil, err
	}
	return &cache.Config{Dir: dir, Size: size, MemSize: mem, FreeRatio: ratio, Shared: c.shared, Logger: log}, nil
}

// args are the flags that reproduce c on another command line (skiff mount
// --supervise passes them to its worker).
func (c *cacheFlags) args() []string {
	return []string{
		"--cache-dir=" + c.dir,
		"--cache-size=" + c.size,
		"--cache-mem=" + c.memSize,
		fmt.Sprintf("--cache-free-ratio=%g", c.freeRatio),
		fmt.Sprintf("--cache-writes=%v", c.writes),
		fmt.Sprintf("--cache-shared=%v", c.shared),
	}
}
