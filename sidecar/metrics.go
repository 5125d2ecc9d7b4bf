package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the sidecar's own instruments; the volumes' counters are
// read at scrape time by collector.
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
	dObjReqs     = desc("skiff_object_requests_total", "Object store requests for blocks.", "op")
	dObjBytes    = desc("skiff_object_bytes_total", "Stored (encoded) bytes moved to and from the object store.", "op")
	dObjErrors   = desc("skiff_object_errors_total", "Failed object store requests (retried or not).", "op")
	dCollapsed   = desc("skiff_block_fetches_collapsed_total", "Block reads that joined a fetch already in flight.")
	dCacheHits   = desc("skiff_cache_hits_total", "Block cache hits.", "tier")
	dCacheMiss   = desc("skiff_cache_misses_total", "Block cache misses.")
	dCacheBytes  = desc("skiff_cache_bytes", "Bytes in the block cache.", "tier")
	dCacheEvict  = desc("skiff_cache_evictions_total", "Block cache entries evicted.")
	dBuffered    = desc("skiff_write_buffer_bytes", "Written data held in memory and not yet uploaded (dirty bytes).")
	dBufPeak     = desc("skiff_write_buffer_peak_bytes", "Most write buffer ever in use.")
	dBufLimit    = desc("skiff_write_buffer_limit_bytes", "The volume's write buffer budget.")
	dBufWaits    = desc("skiff_write_buffer_waits_total", "Writes that waited for buffer space.")
	dCompactions = desc("skiff_compactions_total", "Chunks compacted.")
	dMetaRetries = desc("skiff_meta_tx_retries_total", "Metadata transactions run again.", "reason")
	dBudget      = prometheus.NewDesc("skiff_memory_budget_bytes", "The sidecar's memory budget.", []string{"part"}, nil)
)

// collector reads every volume's counters at scrape time.
type collector struct{ s *Sidecar }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dMounted, dMounts, dMountErrors, dStale, dObjReqs, dObjBytes, dObjErrors,
		dCollapsed, dCacheHits, dCacheMiss, dCacheBytes, dCacheEvict, dBuffered, dBufPeak, dBufLimit, dBufWaits,
		dCompactions, dMetaRetries, dBudget} {
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
		if m == nil {
			continue
		}
		st := m.Stats()
		gauge(dBufLimit, st.BufferLimit, name)
		if cs := st.Chunk; cs != nil {
			counter(dObjReqs, cs.BlocksPut, name, "put")
			counter(dObjReqs, cs.BlocksGot, name, "get")
			counter(dObjReqs, cs.BlocksDeleted, name, "delete")
			counter(dObjBytes, cs.BytesPut, name, "put")
			counter(dObjBytes, cs.BytesGot, name, "get")
			counter(dObjErrors, cs.PutErrors, name, "put")
			counter(dCollapsed, cs.FetchCollapsed, name)
			gauge(dBuffered, cs.Buffered, name)
			gauge(dBufPeak, cs.BufferedPeak, name)
			counter(dBufWaits, cs.BufferWaits, name)
			counter(dCompactions, cs.Compactions, name)
		}
		if cc := st.Cache; cc != nil {
			counter(dCacheHits, cc.MemHits, name, "memory")
			counter(dCacheHits, cc.Hits-cc.MemHits, name, "disk")
			counter(dCacheMiss, cc.Misses, name)
			gauge(dCacheBytes, cc.MemBytes, name, "memory")
			gauge(dCacheBytes, cc.Bytes, name, "disk")
			counter(dCacheEvict, cc.Evictions, name)
		}
		if st.HasMetaRetries {
			counter(dMetaRetries, st.MetaConflicts, name, "conflict")
			counter(dMetaRetries, st.MetaReconnects, name, "reconnect")
		}
	}
}
