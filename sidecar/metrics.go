package sidecar

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-fs/skiff/sidecar/telemetry"
)

// metrics are the sidecar's own instruments; the volumes' counters are
// read at scrape time by collector, or gathered from the worker of a
// supervised volume by gatherer.
type metrics struct {
	statfs *prometheus.HistogramVec
}

func newRegistry(s *Sidecar) (*prometheus.Registry, *metrics) {
	reg := prometheus.NewRegistry()
	m := &metrics{
		statfs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "skiff_statfs_duration_seconds",
			Help:    "Round trip of the readiness statfs through the FUSE mount.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2},
		}, []string{"volume"}),
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.statfs,
		&collector{s: s},
		// The counters of volumes served in this process.
		telemetry.NewCollector(true, func() []telemetry.Volume {
			var out []telemetry.Volume
			for _, vs := range s.vols {
				if m := vs.mounted(); m != nil {
					if _, ok := as[remote](m); !ok {
						out = append(out, telemetry.Volume{Name: vs.spec.Name, Stats: m.Stats()})
					}
				}
			}
			return out
		}),
		s.fuseOps,
	)
	return reg, m
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append([]string{"volume"}, labels...), nil)
}

var (
	dMounted     = desc("skiff_volume_mounted", "1 while the volume is mounted.")
	dMounts      = desc("skiff_volume_mounts_total", "Successful mounts of the volume (more than 1: it was mounted again).")
	dMountErrors = desc("skiff_volume_mount_errors_total", "Failed mount attempts.")
	dStale       = desc("skiff_volume_stale_mounts_detached_total", "Dead or stale mounts detached before mounting.")
	dWorkerGen   = desc("skiff_worker_generation", "Workers started for the volume's supervised mount (more than 1: restarted or upgraded).")
	dWorkerInfo  = desc("skiff_worker_info", "The version of the worker serving the volume's supervised mount.", "version")
	dBudget      = prometheus.NewDesc("skiff_memory_budget_bytes", "The sidecar's memory budget.", []string{"part"}, nil)
)

// collector reports the sidecar's view of every volume at scrape time.
type collector struct{ s *Sidecar }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dMounted, dMounts, dMountErrors, dStale, dWorkerGen, dWorkerInfo, dBudget} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v int64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), l...)
	}
	counter := func(d *prometheus.Desc, v int64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	b := c.s.budget
	gauge(dBudget, b.Buffer, "write_buffer")
	gauge(dBudget, b.CacheMem, "cache_memory")
	gauge(dBudget, b.MemoryLimit, "gomemlimit")
	for _, vs := range c.s.vols {
		name := vs.spec.Name
		m := vs.mounted()
		up := int64(0)
		if m != nil {
			up = 1
		}
		gauge(dMounted, up, name)
		counter(dMounts, vs.mounts.Load(), name)
		counter(dMountErrors, vs.failures.Load(), name)
		counter(dStale, vs.stale.Load(), name)
		if r, ok := as[remote](m); ok {
			if st, err := r.Status(); err == nil {
				gauge(dWorkerGen, int64(st.Generation), name)
				gauge(dWorkerInfo, 1, name, st.WorkerVersion)
			}
		}
	}
}

// remote is a Mounted whose counters live in another process.
type remote interface {
	// Gather reads the volume's metric families (without a volume
	// label) from the process that serves it.
	Gather(ctx context.Context) (map[string]*dto.MetricFamily, error)
	// Status is the supervisor's status.
	Status() (telemetry.Status, error)
}

// as finds a T in m or the mounts it wraps.
func as[T any](m Mounted) (T, bool) {
	for m != nil {
		if t, ok := m.(T); ok {
			return t, true
		}
		u, ok := m.(interface{ Unwrap() Mounted })
		if !ok {
			break
		}
		m = u.Unwrap()
	}
	var zero T
	return zero, false
}

// scrapeTimeout bounds the scrape of one worker.
const scrapeTimeout = 3 * time.Second

// gatherer is the sidecar's registry plus the families gathered from the
// worker of every supervised volume, each metric labelled with its
// volume. A worker that cannot be reached (it is being restarted) is an
// error; the rest is still served.
type gatherer struct{ s *Sidecar }

func (g gatherer) Gather() ([]*dto.MetricFamily, error) {
	own, err := g.s.reg.Gather()
	errs := []error{err}
	byName := make(map[string]*dto.MetricFamily, len(own))
	for _, mf := range own {
		byName[mf.GetName()] = mf
	}
	type result struct {
		name string
		mfs  map[string]*dto.MetricFamily
		err  error
	}
	var rs []*result
	var wg sync.WaitGroup
	for _, vs := range g.s.vols {
		r, ok := as[remote](vs.mounted())
		if !ok {
			continue
		}
		res := &result{name: vs.spec.Name}
		rs = append(rs, res)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
			defer cancel()
			res.mfs, res.err = r.Gather(ctx)
		}()
	}
	wg.Wait()
	for _, r := range rs {
		if r.err != nil {
			errs = append(errs, fmt.Errorf("volume %s: %w", r.name, r.err))
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(r.mfs)) {
			if err := merge(byName, r.mfs[name], r.name); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", r.name, err))
			}
		}
	}
	out := slices.Collect(maps.Values(byName))
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, errors.Join(errs...)
}

// merge adds mf's metrics, labelled volume=vol, to the family of the same
// name in byName (created if missing). A family of another type is
// refused; the help text of the first family seen wins.
func merge(byName map[string]*dto.MetricFamily, mf *dto.MetricFamily, vol string) error {
	dst, ok := byName[mf.GetName()]
	if !ok {
		dst = &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type}
		byName[mf.GetName()] = dst
	} else if dst.GetType() != mf.GetType() {
		return fmt.Errorf("metric %s is a %s in the worker but a %s in the sidecar; left out", mf.GetName(), mf.GetType(), dst.GetType())
	}
	for _, m := range mf.Metric {
		m = proto.Clone(m).(*dto.Metric)
		labels := []*dto.LabelPair{{Name: proto.String("volume"), Value: proto.String(vol)}}
		for _, l := range m.Label {
			if l.GetName() != "volume" {
				labels = append(labels, l)
			}
		}
		sort.Slice(labels, func(i, j int) bool { return labels[i].GetName() < labels[j].GetName() })
		m.Label = labels
		dst.Metric = append(dst.Metric, m)
	}
	return nil
}
