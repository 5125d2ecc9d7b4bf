package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/volume"
)

type warmupFlags struct {
	threads int
	check   bool
	evict   bool
	cache   cacheFlags
}

func newWarmup(g *globals) *cobra.Command {
	var f warmupFlags
	cmd := &cobra.Command{
		Use:   "warmup [flags] META_URL PATH... | warmup [flags] MOUNTED_PATH...",
		Short: "Fetch files and directory trees into the local block cache (or --check, --evict)",
		Long: `Fetch the blocks of the files under each PATH (a path inside the volume;
directories are walked recursively) into the local block cache, in parallel,
so that the first read after it runs at local-disk speed. Blocks already
cached are skipped, so an interrupted warmup resumes where it stopped.

Use the cache directory and size of the mount that will read the data
(--cache-dir, --cache-size; the defaults match skiff mount's). A running
mount finds blocks warmed beside it on its next read of them.

--check reports how much of the data is cached; --evict removes it from the
cache. An embedded (bolt://) volume cannot be warmed this way while it is
mounted: its metadata file allows one process.

Without a META_URL (the first argument has no "://"), every PATH must lie in
a skiff mount: warmup then reads the files through the mount, in parallel,
which fills that mount's own cache (--check and --evict need the META_URL
form).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !strings.Contains(args[0], "://") {
				return runWarmupMounted(cmd, &f, args)
			}
			if len(args) < 2 {
				return errors.New("give at least one PATH inside the volume after the META_URL")
			}
			return runWarmup(cmd, g, &f, args[0], args[1:])
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.threads, "threads", 50, "parallel block fetches")
	fl.BoolVar(&f.check, "check", false, "only report how much of the data is cached")
	fl.BoolVar(&f.evict, "evict", false, "remove the data's blocks from the cache")
	addCacheFlags(cmd, &f.cache)
	return cmd
}

// warmFile is one regular file to warm.
type warmFile struct {
	path string
	ino  meta.Ino
	size uint64
}

func runWarmup(cmd *cobra.Command, g *globals, f *warmupFlags, metaURL string, paths []string) error {
	ctx := cmd.Context()
	if f.threads < 1 {
		return errors.New("--threads must be at least 1")
	}
	if f.check && f.evict {
		return errors.New("--check and --evict exclude each other")
	}
	log := g.logger()
	cacheCfg, err := f.cache.config(log)
	if err != nil {
		return err
	}
	if cacheCfg == nil {
		return errors.New("warmup needs a block cache: --cache-size must not be 0")
	}
	pass, err := g.passphrase()
	if err != nil {
		return err
	}
	v, err := volume.Open(ctx, volume.Config{
		MetaURL:         metaURL,
		Passphrase:      pass,
		CredentialsFile: g.credentials,
		Logger:          log,
		Meta:            meta.Options{Logger: log, ReadOnly: true},
		Chunk:           chunk.Config{DownloadConcurrency: f.threads, Readahead: -1, FlushAfter: -1},
		Cache:           cacheCfg,
	})
	if err != nil {
		return err
	}
	defer v.Close(context.WithoutCancel(ctx))

	files, err := collectFiles(ctx, v, paths)
	if err != nil {
		return err
	}
	var blocks []chunk.Block
	var total int64
	seen := map[string]bool{} // hard links list the same blocks
	for _, wf := range files {
		bs, err := v.Chunks.FileBlocks(ctx, v.ChunkMeta(), uint64(wf.ino), wf.size)
		if err != nil {
			return fmt.Errorf("%s: %w", wf.path, err)
		}
		for _, b := range bs {
			if !seen[b.Key] {
				seen[b.Key] = true
				blocks = append(blocks, b)
				total += int64(b.Len)
			}
		}
	}
	out := cmd.OutOrStdout()
	what := fmt.Sprintf("%d files, %d blocks (%s)", len(files), len(blocks), humanBytes(total))

	switch {
	case f.check:
		var n int
		var bytes int64
		for _, b := range blocks {
			if v.Chunks.Cached(b) {
				n++
				bytes += int64(b.Len)
			}
		}
		fmt.Fprintf(out, "%s: %d blocks (%s) cached, %s\n", what, n, humanBytes(bytes), percent(bytes, total))
		return nil
	case f.evict:
		for _, b := range blocks {
			v.Chunks.Evict(b)
		}
		fmt.Fprintf(out, "%s: evicted from the cache at %s\n", what, v.Cache.Dir())
		return nil
	}

	if limit := v.Cache.Limit(); total > limit {
		fmt.Fprintf(cmd.ErrOrStderr(), "skiff warmup: warning: the data (%s) is larger than the cache (%s): blocks warmed first will be evicted\n",
			humanBytes(total), humanBytes(limit))
	}
	var (
		fetched, cached, failed atomic.Int64
		doneBytes               atomic.Int64
		firstErr                error
		errOnce                 sync.Once
	)
	start := time.Now()
	stop := startProgress(cmd.ErrOrStderr(), int64(len(blocks)), total, func() (int64, int64) {
		return fetched.Load() + cached.Load() + failed.Load(), doneBytes.Load()
	})
	work := make(chan chunk.Block)
	var wg sync.WaitGroup
	for range min(f.threads, max(1, len(blocks))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				got, err := v.Chunks.Warm(ctx, b)
				switch {
				case err != nil:
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
				case got:
					fetched.Add(1)
				default:
					cached.Add(1)
				}
				doneBytes.Add(int64(b.Len))
			}
		}()
	}
feed:
	for _, b := range blocks {
		select {
		case work <- b:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	stop()
	elapsed := time.Since(start)
	fmt.Fprintf(out, "%s: %d blocks fetched, %d already cached, %d failed, in %s (%s/s)\n",
		what, fetched.Load(), cached.Load(), failed.Load(), elapsed.Round(time.Millisecond),
		humanBytes(int64(float64(doneBytes.Load())/max(elapsed.Seconds(), 1e-3))))
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("warmup interrupted (run it again to resume): %w", err)
	}
	if firstErr != nil {
		return fmt.Errorf("%d blocks could not be fetched; the first: %w", failed.Load(), firstErr)
	}
	return nil
}

// collectFiles resolves the paths inside the volume and walks directories,
// returning every regular file with data (each inode once).
func collectFiles(ctx context.Context, v *volume.Volume, paths []string) ([]warmFile, error) {
	var files []warmFile
	seen := map[meta.Ino]bool{}
	var walk func(p string, ino meta.Ino, attr meta.Attr) error
	walk = func(p string, ino meta.Ino, attr meta.Attr) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch attr.Typ {
		case meta.TypeFile:
			if !seen[ino] && attr.Size > 0 {
				seen[ino] = true
				files = append(files, warmFile{p, ino, attr.Size})
			}
		case meta.TypeDir:
			ents, err := v.Meta.Readdir(ctx, meta.RootCaller(), ino, true)
			if err != nil {
				return fmt.Errorf("list %s: %w", p, err)
			}
			for _, e := range ents {
				if e.Name == "." || e.Name == ".." {
					continue
				}
				if err := walk(path.Join(p, e.Name), e.Ino, e.Attr); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, p := range paths {
		p = "/" + strings.Trim(p, "/")
		ino, attr, err := v.Resolve(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w (PATH is a path inside the volume)", p, err)
		}
		if err := walk(p, ino, attr); err != nil {
			return nil, err
		}
	}
	return files, nil
}

func percent(n, total int64) string {
	if total == 0 {
		return "100%"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(total))
}

// startProgress draws a progress line on w every 200 ms while w is a
// terminal; stop erases it.
func startProgress(w io.Writer, blocks, bytes int64, done func() (int64, int64)) (stop func()) {
	f, ok := w.(*os.File)
	if !ok {
		return func() {}
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				fmt.Fprint(f, "\r\033[K")
				return
			case <-tick.C:
				n, b := done()
				const width = 30
				fill := 0
				if bytes > 0 {
					fill = int(int64(width) * b / bytes)
				}
				rate := float64(b) / max(time.Since(start).Seconds(), 1e-3)
				fmt.Fprintf(f, "\r\033[K[%s%s] %s  %d/%d blocks  %s/%s  %s/s",
					strings.Repeat("=", fill), strings.Repeat(" ", width-fill), percent(b, bytes),
					n, blocks, humanBytes(b), humanBytes(bytes), humanBytes(int64(rate)))
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

// runWarmupMounted warms files through the skiff mount they are in: it
// reads them in parallel (4 MiB pieces, --threads at once) and discards
// the bytes; the mount caches the blocks it fetches.
func runWarmupMounted(cmd *cobra.Command, f *warmupFlags, paths []string) error {
	ctx := cmd.Context()
	if f.check || f.evict {
		return errors.New("--check and --evict need the META_URL form: skiff warmup --check META_URL PATH")
	}
	if f.threads < 1 {
		return errors.New("--threads must be at least 1")
	}
	type piece struct {
		path     string
		off, len int64
	}
	const pieceSize = 4 << 20
	var pieces []piece
	var files []string
	var total int64
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		if ok, err := onSkiffMount(abs); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%s is not in a skiff mount: give the volume's META_URL first to warm it from outside", p)
		}
		err = filepath.WalkDir(abs, func(fp string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil || info.Size() == 0 {
				return err
			}
			files = append(files, fp)
			for off := int64(0); off < info.Size(); off += pieceSize {
				pieces = append(pieces, piece{fp, off, min(pieceSize, info.Size()-off)})
			}
			total += info.Size()
			return nil
		})
		if err != nil {
			return err
		}
	}
	var (
		doneBytes, done, failed atomic.Int64
		firstErr                error
		errOnce                 sync.Once
	)
	start := time.Now()
	stop := startProgress(cmd.ErrOrStderr(), int64(len(pieces)), total, func() (int64, int64) {
		return done.Load(), doneBytes.Load()
	})
	work := make(chan piece)
	var wg sync.WaitGroup
	for range min(f.threads, max(1, len(pieces))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for pc := range work {
				err := readPiece(pc.path, pc.off, pc.len, buf)
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
				done.Add(1)
				doneBytes.Add(pc.len)
			}
		}()
	}
feed:
	for _, pc := range pieces {
		select {
		case work <- pc:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	stop()
	images := buildImages(ctx, files, f.threads)
	elapsed := time.Since(start)
	fmt.Fprintf(cmd.OutOrStdout(), "%d files (%s) read through the mount in %s (%s/s), %d pieces failed; %d file images ready\n",
		len(files), humanBytes(total), elapsed.Round(time.Millisecond),
		humanBytes(int64(float64(doneBytes.Load())/max(elapsed.Seconds(), 1e-3))), failed.Load(), images)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("warmup interrupted: %w", err)
	}
	if firstErr != nil {
		return fmt.Errorf("%d pieces could not be read; the first: %w", failed.Load(), firstErr)
	}
	return nil
}

// buildImages asks the mount for the file image of every file warmed
// (fuse.IoctlBuildImage), threads at once, so that the first read after
// the warmup reads the image. It returns how many files have one; a mount
// without images, or a file it keeps none of, is no error.
func buildImages(ctx context.Context, files []string, threads int) int64 {
	var ready atomic.Int64
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(threads, max(1, len(files))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if askImage(p) == nil {
					ready.Add(1)
				}
			}
		}()
	}
	for _, p := range files {
		if ctx.Err() != nil {
			break
		}
		work <- p
	}
	close(work)
	wg.Wait()
	return ready.Load()
}

// askImage opens path and sends it fuse.IoctlBuildImage.
func askImage(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fuse.IoctlBuildImage, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func readPiece(path string, off, n int64, buf []byte) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	for n > 0 {
		k, err := fh.ReadAt(buf[:min(int64(len(buf)), n)], off)
		off += int64(k)
		n -= int64(k)
		if err == io.EOF {
			return nil // the file shrank meanwhile
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// onSkiffMount reports whether path lies in a skiff FUSE mount, from the
// longest mount point in /proc/self/mountinfo that contains it.
func onSkiffMount(path string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("find the mount of %s: %w", path, err)
	}
	best, fstype := "", ""
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, fstype = mp, fields[sep+1]
		}
	}
	return fstype == "fuse.skiff", nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				out.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		out.WriteByte(s[i])
	}
	return out.String()
}
