package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/bench/fsbench"
	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/object/stores"
)

// objbenchFlags are the options of skiff objbench.
type objbenchFlags struct {
	size     string
	count    int
	threads  int
	listRuns int
}

func newObjbench(g *globals) *cobra.Command {
	var f objbenchFlags
	cmd := &cobra.Command{
		Use:   "objbench [flags] BUCKET_URL",
		Short: "Measure the object store alone: put, get, head, list and delete",
		Long: `Measure the object store at BUCKET_URL (gs://bucket[/prefix], file:///dir or
a path) without skiff's file system: put --count objects of --size, get each
whole, head each, list them, and delete them, --threads at a time. Prints the
throughput and the latency of one request (p50, p99).

The objects go under a new prefix skiff-objbench-<random>/ of the bucket and
are deleted at the end, also after a failure.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runObjbench(cmd, g, &f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.size, "size", "4M", "size of each object (skiff's default block size)")
	fl.IntVar(&f.count, "count", 100, "objects to put, get, head and delete")
	fl.IntVar(&f.threads, "threads", 4, "parallel requests")
	fl.IntVar(&f.listRuns, "list-runs", 10, "times to list all the objects")
	return cmd
}

func runObjbench(cmd *cobra.Command, g *globals, f *objbenchFlags, bucketURL string) error {
	ctx := cmd.Context()
	size, err := parseSize(f.size)
	if err != nil {
		return fmt.Errorf("--size: %w", err)
	}
	switch {
	case size > 5<<30:
		return fmt.Errorf("--size %s is too big: at most 5G", f.size)
	case f.count < 1:
		return errors.New("--count must be at least 1")
	case f.threads < 1:
		return errors.New("--threads must be at least 1")
	case f.listRuns < 0:
		return errors.New("--list-runs must not be negative")
	}
	var opts []stores.Option
	if g.credentials != "" {
		opts = append(opts, stores.WithCredentialsFile(g.credentials))
	}
	base, err := stores.Open(ctx, bucketURL, opts...)
	if err != nil {
		return err
	}
	defer stores.Close(base)
	var rnd [6]byte
	rand.Read(rnd[:])
	prefix := "skiff-objbench-" + hex.EncodeToString(rnd[:]) + "/"
	s := object.WithPrefix(base, prefix)
	keys := make([]string, f.count)
	for i := range keys {
		keys[i] = fmt.Sprintf("obj-%07d", i)
	}
	// Remove whatever was written, also when a step fails or ^C stops it.
	defer func() {
		ctx := context.WithoutCancel(ctx)
		for _, k := range keys {
			_ = s.Delete(ctx, k)
		}
	}()

	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "skiff objbench on %s: %d objects of %s under %s, %d thread(s)\n",
		base, f.count, humanBytes(size), prefix, f.threads)
	data := make([]byte, size)
	rand.Read(data)

	type row struct {
		item string
		r    fsbench.Result
		unit string // MiB/s, or the rate's unit
	}
	var rows []row
	put, err := eachKey(keys, f.threads, func(k string) (int64, error) {
		return size, s.Put(ctx, k, data)
	})
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	rows = append(rows, row{"Put", put, "MiB/s"})
	get, err := eachKey(keys, f.threads, func(k string) (int64, error) {
		rc, err := s.Get(ctx, k, 0, -1)
		if err != nil {
			return 0, err
		}
		defer rc.Close()
		n, err := io.Copy(io.Discard, rc)
		if err == nil && n != size {
			err = fmt.Errorf("get %s: %d bytes, want %d", k, n, size)
		}
		return n, err
	})
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	rows = append(rows, row{"Get", get, "MiB/s"})
	head, err := eachKey(keys, f.threads, func(k string) (int64, error) {
		info, err := s.Head(ctx, k)
		if err == nil && info.Size != size {
			err = fmt.Errorf("head %s: size %d, want %d", k, info.Size, size)
		}
		return 0, err
	})
	if err != nil {
		return fmt.Errorf("head: %w", err)
	}
	rows = append(rows, row{"Head", head, "objects/s"})
	if f.listRuns > 0 {
		list, err := listAll(ctx, s, f.listRuns, len(keys))
		if err != nil {
			return fmt.Errorf("list: %w", err)
		}
		rows = append(rows, row{"List", list, "objects/s"})
	}
	del, err := eachKey(keys, f.threads, func(k string) (int64, error) {
		return 0, s.Delete(ctx, k)
	})
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	rows = append(rows, row{"Delete", del, "objects/s"})

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ITEM\tTHROUGHPUT\tREQUESTS\tTIME\tLATENCY p50\tp99")
	for _, r := range rows {
		tput := fmt.Sprintf("%.1f MiB/s", r.r.MiBps())
		if r.unit != "MiB/s" {
			tput = fmt.Sprintf("%.1f %s", r.r.OpsPerSec(), r.unit)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f s\t%s\t%s\n", r.item, tput, len(r.r.Lat), r.r.Elapsed.Seconds(),
			fmtLatency(r.r.Percentile(50)), fmtLatency(r.r.Percentile(99)))
	}
	return tw.Flush()
}

// eachKey runs op on every key, threads at a time; op returns the bytes
// it moved. Latencies are per request; the first error stops the rest.
func eachKey(keys []string, threads int, op func(key string) (int64, error)) (fsbench.Result, error) {
	threads = max(1, min(threads, len(keys)))
	work := make(chan string)
	rs := make([]fsbench.Result, threads)
	errs := make([]error, threads)
	stop := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for th := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				t := time.Now()
				n, err := op(k)
				rs[th].Lat = append(rs[th].Lat, time.Since(t))
				if err != nil {
					errs[th] = err
					once.Do(func() { close(stop) })
					return
				}
				rs[th].Ops++
				rs[th].Bytes += n
			}
		}()
	}
feed:
	for _, k := range keys {
		select {
		case work <- k:
		case <-stop:
			break feed
		}
	}
	close(work)
	wg.Wait()
	return fsbench.Merge(rs, time.Since(start)), errors.Join(errs...)
}

// listAll lists every object under s runs times, page by page; Ops counts
// the objects listed and Lat has one entry per List request.
func listAll(ctx context.Context, s object.Store, runs, want int) (fsbench.Result, error) {
	var r fsbench.Result
	start := time.Now()
	for range runs {
		n, after := 0, ""
		for {
			t := time.Now()
			page, err := s.List(ctx, "", after, 0)
			r.Lat = append(r.Lat, time.Since(t))
			if err != nil {
				return r, err
			}
			if len(page) == 0 {
				break
			}
			n += len(page)
			after = page[len(page)-1].Key
		}
		if n != want {
			return r, fmt.Errorf("listed %d objects, want %d", n, want)
		}
		r.Ops += n
	}
	r.Elapsed = time.Since(start)
	return r, nil
}
