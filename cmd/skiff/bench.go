package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/bench/fsbench"
)

// benchFlags are the options of skiff bench.
type benchFlags struct {
	bigSize    string
	smallCount int
	smallSize  string
	ioSize     string
	threads    int
	dropCaches bool
}

func newBench(g *globals) *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench [flags] PATH",
		Short: "Measure big-file and small-file throughput and latency in a directory (a skiff mount or any other)",
		Long: `Measure, in a new directory under PATH (a skiff mount or any directory,
for comparison): a big file written and read sequentially, and small files
written, read, stat'ed and deleted. Each thread works on its own big file and
its own small files. skiff bench prints the throughput and the latency of one
operation (p50, p99): for big files one read or write call of --io-size, for
small files one whole file. Writes are timed to the end of fsync and close
(on skiff: uploaded and committed).

As root the kernel's page cache is dropped before each read phase
(--drop-caches); the skiff block cache is not touched. Everything the
benchmark wrote is removed at the end.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBench(cmd, &f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.bigSize, "big-size", "1G", "size of each thread's big file (0 skips the big-file test)")
	fl.IntVar(&f.smallCount, "small-count", 1000, "small files per thread (0 skips the small-file test)")
	fl.StringVar(&f.smallSize, "small-size", "128K", "size of each small file")
	fl.StringVar(&f.ioSize, "io-size", "1M", "size of each read and write call on the big file")
	fl.IntVar(&f.threads, "threads", 1, "parallel threads, each with its own files")
	fl.BoolVar(&f.dropCaches, "drop-caches", os.Geteuid() == 0, "drop the kernel's page cache before reading (needs root)")
	return cmd
}

func runBench(cmd *cobra.Command, f *benchFlags, path string) error {
	bigSize, err := parseSize(f.bigSize)
	if err != nil {
		return fmt.Errorf("--big-size: %w", err)
	}
	smallSize, err := parseSize(f.smallSize)
	if err != nil {
		return fmt.Errorf("--small-size: %w", err)
	}
	ioSize, err := parseSize(f.ioSize)
	if err != nil {
		return fmt.Errorf("--io-size: %w", err)
	}
	switch {
	case f.threads < 1:
		return errors.New("--threads must be at least 1")
	case f.smallCount < 0:
		return errors.New("--small-count must not be negative")
	case ioSize < 1 || ioSize > 64<<20:
		return fmt.Errorf("--io-size %s must be between 1 byte and 64 MiB", f.ioSize)
	case smallSize > 1<<30:
		return fmt.Errorf("--small-size %s is not small: at most 1G", f.smallSize)
	case bigSize == 0 && f.smallCount == 0:
		return errors.New("nothing to do: --big-size and --small-count are both 0")
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("bench: %s is not a directory", path)
	}
	dir, err := os.MkdirTemp(path, "skiff-bench-")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)

	out := cmd.OutOrStdout()
	drop := func() error {
		if !f.dropCaches {
			return nil
		}
		return fsbench.DropCaches()
	}
	note := "page cache dropped before reads"
	if !f.dropCaches {
		note = "page cache not dropped"
	}
	fmt.Fprintf(out, "skiff bench in %s: %d thread(s); big file %s in %s calls; %d small files of %s per thread; %s\n",
		dir, f.threads, humanBytes(bigSize), humanBytes(ioSize), f.smallCount, humanBytes(smallSize), note)

	type row struct {
		item string
		r    fsbench.Result
		bulk bool // throughput in MiB/s, else in files/s
	}
	var rows []row
	if bigSize > 0 {
		big := func(i int) string { return filepath.Join(dir, fmt.Sprintf("big-%02d", i)) }
		w, err := parallel(f.threads, func(i int) (fsbench.Result, error) {
			return fsbench.WriteFile(big(i), bigSize, int(ioSize))
		})
		if err != nil {
			return err
		}
		rows = append(rows, row{"Write big file", w, true})
		if err := drop(); err != nil {
			return err
		}
		r, err := parallel(f.threads, func(i int) (fsbench.Result, error) {
			return fsbench.ReadFile(big(i), int(ioSize))
		})
		if err != nil {
			return err
		}
		rows = append(rows, row{"Read big file", r, true})
		for i := range f.threads {
			if err := os.Remove(big(i)); err != nil {
				return err
			}
		}
	}
	if f.smallCount > 0 {
		sdir := filepath.Join(dir, "small")
		if err := os.Mkdir(sdir, 0o755); err != nil {
			return err
		}
		s := fsbench.SmallFiles{Dir: sdir, Count: f.smallCount, Size: int(smallSize), Threads: f.threads}
		phases := []struct {
			item string
			run  func() (fsbench.Result, error)
			drop bool
		}{
			{"Write small files", s.Create, false},
			{"Read small files", s.Read, true},
			{"Stat small files", s.Stat, false},
			{"Delete small files", s.Delete, false},
		}
		for _, p := range phases {
			if p.drop {
				if err := drop(); err != nil {
					return err
				}
			}
			r, err := p.run()
			if err != nil {
				return fmt.Errorf("%s: %w", p.item, err)
			}
			rows = append(rows, row{p.item, r, false})
		}
	}

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ITEM\tTHROUGHPUT\tOPS\tTIME\tLATENCY p50\tp99")
	for _, r := range rows {
		tput := fmt.Sprintf("%.1f files/s", r.r.OpsPerSec())
		if r.bulk {
			tput = fmt.Sprintf("%.1f MiB/s", r.r.MiBps())
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f s\t%s\t%s\n", r.item, tput, r.r.Ops, r.r.Elapsed.Seconds(),
			fmtLatency(r.r.Percentile(50)), fmtLatency(r.r.Percentile(99)))
	}
	return tw.Flush()
}

// parallel runs fn(0..n-1) at the same time and merges the results.
func parallel(n int, fn func(i int) (fsbench.Result, error)) (fsbench.Result, error) {
	rs := make([]fsbench.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs[i], errs[i] = fn(i)
		}()
	}
	wg.Wait()
	return fsbench.Merge(rs, time.Since(start)), errors.Join(errs...)
}

// fmtLatency prints a latency with 3 significant digits.
func fmtLatency(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}
