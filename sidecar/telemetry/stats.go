package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/volume"
)

// Stats are a mounted volume's counters.
type Stats struct {
	// Chunk and Cache are nil when unknown (no cache, or another
	// process serves the volume).
	Chunk *chunk.Stats
	Cache *cache.Stats
	// BufferLimit is the volume's write buffer budget.
	BufferLimit int64
	// MetaConflicts and MetaReconnects are the meta transaction retries;
	// HasMetaRetries says the engine reports them (Redis does).
	HasMetaRetries                bool
	MetaConflicts, MetaReconnects int64
}

// txRetrier is what a meta engine that counts its retries offers
// (fsclient/meta/redis).
type txRetrier interface {
	TxRetries() (conflicts, reconnects int64)
}

// StatsOf reads the counters of an open volume whose write buffer
// budget is bufferLimit.
func StatsOf(v *volume.Volume, bufferLimit int64) Stats {
	cs := v.Chunks.Stats()
	st := Stats{Chunk: &cs, BufferLimit: bufferLimit}
	if v.Cache != nil {
		c := v.Cache.Stats()
		st.Cache = &c
	}
	if r, ok := v.Meta.Engine().(txRetrier); ok {
		st.HasMetaRetries = true
		st.MetaConflicts, st.MetaReconnects = r.TxRetries()
	}
	return st
}

// Volume is one volume's counters, by name.
type Volume struct {
	Name  string
	Stats Stats
}

// Collector is a prometheus.Collector of volume counters, read at
// scrape time from a function.
type Collector struct {
	labelled bool
	list     func() []Volume

	objReqs, objBytes, objErrors, collapsed, cacheHits, cacheMiss, cacheBytes, cacheEvict *prometheus.Desc
	buffered, bufPeak, bufLimit, bufWaits, compactions, metaRetries                       *prometheus.Desc
}

// NewCollector returns a collector of the volumes list returns. With
// volumeLabel every metric has a "volume" label holding Volume.Name;
// without, list should return one volume (its name is ignored).
func NewCollector(volumeLabel bool, list func() []Volume) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		if volumeLabel {
			labels = append([]string{"volume"}, labels...)
		}
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &Collector{
		labelled:    volumeLabel,
		list:        list,
		objReqs:     d("skiff_object_requests_total", "Object store requests for blocks.", "op"),
		objBytes:    d("skiff_object_bytes_total", "Stored (encoded) bytes moved to and from the object store.", "op"),
		objErrors:   d("skiff_object_errors_total", "Failed object store requests (retried or not).", "op"),
		collapsed:   d("skiff_block_fetches_collapsed_total", "Block reads that joined a fetch already in flight."),
		cacheHits:   d("skiff_cache_hits_total", "Block cache hits.", "tier"),
		cacheMiss:   d("skiff_cache_misses_total", "Block cache misses."),
		cacheBytes:  d("skiff_cache_bytes", "Bytes in the block cache.", "tier"),
		cacheEvict:  d("skiff_cache_evictions_total", "Block cache entries evicted."),
		buffered:    d("skiff_write_buffer_bytes", "Written data held in memory and not yet uploaded (dirty bytes)."),
		bufPeak:     d("skiff_write_buffer_peak_bytes", "Most write buffer ever in use."),
		bufLimit:    d("skiff_write_buffer_limit_bytes", "The volume's write buffer budget."),
		bufWaits:    d("skiff_write_buffer_waits_total", "Writes that waited for buffer space."),
		compactions: d("skiff_compactions_total", "Chunks compacted."),
		metaRetries: d("skiff_meta_tx_retries_total", "Metadata transactions run again.", "reason"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.objReqs, c.objBytes, c.objErrors, c.collapsed, c.cacheHits, c.cacheMiss,
		c.cacheBytes, c.cacheEvict, c.buffered, c.bufPeak, c.bufLimit, c.bufWaits, c.compactions, c.metaRetries} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, v := range c.list() {
		var vl []string
		if c.labelled {
			vl = []string{v.Name}
		}
		emit := func(d *prometheus.Desc, t prometheus.ValueType, val int64, l ...string) {
			ch <- prometheus.MustNewConstMetric(d, t, float64(val), append(vl[:len(vl):len(vl)], l...)...)
		}
		counter := func(d *prometheus.Desc, val int64, l ...string) { emit(d, prometheus.CounterValue, val, l...) }
		gauge := func(d *prometheus.Desc, val int64, l ...string) { emit(d, prometheus.GaugeValue, val, l...) }
		st := v.Stats
		gauge(c.bufLimit, st.BufferLimit)
		if cs := st.Chunk; cs != nil {
			counter(c.objReqs, cs.BlocksPut, "put")
			counter(c.objReqs, cs.BlocksGot, "get")
			counter(c.objReqs, cs.BlocksDeleted, "delete")
			counter(c.objBytes, cs.BytesPut, "put")
			counter(c.objBytes, cs.BytesGot, "get")
			counter(c.objErrors, cs.PutErrors, "put")
			counter(c.collapsed, cs.FetchCollapsed)
			gauge(c.buffered, cs.Buffered)
			gauge(c.bufPeak, cs.BufferedPeak)
			counter(c.bufWaits, cs.BufferWaits)
			counter(c.compactions, cs.Compactions)
		}
		if cc := st.Cache; cc != nil {
			counter(c.cacheHits, cc.MemHits, "memory")
			counter(c.cacheHits, cc.Hits-cc.MemHits, "disk")
			counter(c.cacheMiss, cc.Misses)
			gauge(c.cacheBytes, cc.MemBytes, "memory")
			gauge(c.cacheBytes, cc.Bytes, "disk")
			counter(c.cacheEvict, cc.Evictions)
		}
		if st.HasMetaRetries {
			counter(c.metaRetries, st.MetaConflicts, "conflict")
			counter(c.metaRetries, st.MetaReconnects, "reconnect")
		}
	}
}
