// Command relaybench measures sequential read and write throughput through
// a direct go-fuse mount and through the supervisor's relay
// (fsclient/fuse/supervisor) on the same kind of volume: bbolt metadata,
// blocks in a local directory. Run as root:
//
//	go run ./bench/relaybench -size 1024 -runs 3
//
// Each run writes -size MiB in 1 MiB write(2)s (timed to close, which
// commits), drops the page cache (the block files' too), and reads the
// file back in 1 MiB read(2)s. It prints the median MB/s of each and the
// relay/direct ratio.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/fuse/supervisor"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/vfs"
	"github.com/skiff-fs/skiff/fsclient/volume"
)

const workerEnv = "RELAYBENCH_WORKER"

func main() {
	if url := os.Getenv(workerEnv); url != "" {
		if err := worker(url); err != nil {
			fmt.Fprintln(os.Stderr, "relaybench worker:", err)
			os.Exit(1)
		}
		return
	}
	size := flag.Int("size", 1024, "MiB per run")
	runs := flag.Int("runs", 3, "runs per mode (the median is reported)")
	readers := flag.Int("readers", 2, "relay goroutines per direction")
	dir := flag.String("dir", "", "work directory (default: a temporary one)")
	flag.Parse()
	if err := run(*size, *runs, *readers, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
}

func openVFS(ctx context.Context, metaURL, mp string) (*volume.Volume, *vfs.VFS, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	v, err := volume.Open(ctx, volume.Config{MetaURL: metaURL, Logger: log, Meta: meta.Options{Logger: log}})
	if err != nil {
		return nil, nil, err
	}
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: "bench", MountPoint: mp, PID: os.Getpid()}); err != nil {
		v.Close(ctx)
		return nil, nil, err
	}
	fs, err := vfs.New(v, vfs.Config{AttrTimeout: time.Second, EntryTimeout: time.Second, DirEntryTimeout: time.Second, Logger: log})
	if err != nil {
		v.Close(ctx)
		return nil, nil, err
	}
	return v, fs, nil
}

func worker(metaURL string) error {
	ctx := context.Background()
	w, err := supervisor.Attach(os.NewFile(supervisor.WorkerControlFD, "control"))
	if err != nil {
		return err
	}
	v, fs, err := openVFS(ctx, metaURL, w.Mountpoint())
	if err != nil {
		return err
	}
	serr := w.Serve(fs, fuse.Options{}, "bench")
	return errors.Join(serr, fs.Close(ctx), v.Close(ctx))
}

func run(sizeMiB, runs, readers int, dir string) error {
	ctx := context.Background()
	if dir == "" {
		d, err := os.MkdirTemp("", "relaybench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	metaURL := "bolt://" + filepath.Join(dir, "meta.db")
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: metaURL, Name: "bench", Bucket: "file://" + filepath.Join(dir, "blocks")}); err != nil {
		return err
	}
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		return err
	}
	data := make([]byte, 64<<20)
	rand.Read(data)

	// Direct: go-fuse serves /dev/fuse in this process.
	var dw, dr []float64
	{
		v, fs, err := openVFS(ctx, metaURL, mp)
		if err != nil {
			return err
		}
		srv, err := fuse.Mount(fs, mp, fuse.Options{AllowOther: true})
		if err != nil {
			return err
		}
		dw, dr, err = measure(mp, "direct", sizeMiB, runs, data)
		fs.FlushAll(ctx)
		if uerr := srv.Unmount(); uerr != nil {
			fuse.Unmount(mp, true)
		}
		fs.Close(ctx)
		v.Close(ctx)
		if err != nil {
			return err
		}
	}
	// Relay: a supervisor in this process, the file system in a worker.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	s, err := supervisor.Start(supervisor.Config{
		Mountpoint: mp,
		AllowOther: true,
		Readers:    readers,
		Worker:     supervisor.Command{Path: self, Env: append(os.Environ(), workerEnv+"="+metaURL)},
	})
	if err != nil {
		return err
	}
	rw, rr, err := measure(mp, "relay", sizeMiB, runs, data)
	if serr := s.Shutdown(ctx); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	fmt.Printf("\nsequential, %d MiB, median of %d, MB/s (relay max_write %d KiB, %d relay goroutines per direction)\n", sizeMiB, runs, s.MaxWrite()>>10, readers)
	fmt.Printf("%-8s %10s %10s %8s\n", "", "direct", "relay", "ratio")
	fmt.Printf("%-8s %10.0f %10.0f %8.2f\n", "write", median(dw), median(rw), median(rw)/median(dw))
	fmt.Printf("%-8s %10.0f %10.0f %8.2f\n", "read", median(dr), median(rr), median(rr)/median(dr))
	return nil
}

func measure(mp, mode string, sizeMiB, runs int, data []byte) (w, r []float64, err error) {
	for i := range runs {
		name := filepath.Join(mp, fmt.Sprintf("%s-%d", mode, i))
		t0 := time.Now()
		f, err := os.Create(name)
		if err != nil {
			return nil, nil, err
		}
		for off := 0; off < sizeMiB<<20; off += 1 << 20 {
			o := off % len(data)
			if _, err := f.Write(data[o : o+1<<20]); err != nil {
				f.Close()
				return nil, nil, err
			}
		}
		if err := f.Close(); err != nil {
			return nil, nil, err
		}
		w = append(w, mbps(sizeMiB, time.Since(t0)))
		dropCaches()
		t0 = time.Now()
		f, err = os.Open(name)
		if err != nil {
			return nil, nil, err
		}
		buf := make([]byte, 1<<20)
		n, err := io.CopyBuffer(io.Discard, onlyReader{f}, buf)
		f.Close()
		if err != nil {
			return nil, nil, err
		}
		if n != int64(sizeMiB)<<20 {
			return nil, nil, fmt.Errorf("read %d bytes, want %d", n, sizeMiB<<20)
		}
		r = append(r, mbps(sizeMiB, time.Since(t0)))
		os.Remove(name)
		fmt.Fprintf(os.Stderr, "%s run %d: write %.0f MB/s, read %.0f MB/s\n", mode, i+1, w[i], r[i])
	}
	return w, r, nil
}

// onlyReader hides WriteTo so io.CopyBuffer uses the 1 MiB buffer.
type onlyReader struct{ io.Reader }

func dropCaches() {
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

func mbps(mib int, d time.Duration) float64 { return float64(mib<<20) / 1e6 / d.Seconds() }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
