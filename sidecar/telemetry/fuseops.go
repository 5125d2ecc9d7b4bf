package telemetry

import (
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// FuseOps are the FUSE per-operation metrics:
// skiff_fuse_op_duration_seconds{op} and
// skiff_fuse_op_errors_total{op,errno} (with a volume label first when
// made with one). Every answer that is not OK counts as an error,
// including the expected ones (ENOENT of a LOOKUP).
type FuseOps struct {
	labelled bool
	dur      *prometheus.HistogramVec
	errs     *prometheus.CounterVec
}

// NewFuseOps makes the instruments; register the result.
func NewFuseOps(volumeLabel bool) *FuseOps {
	var l []string
	if volumeLabel {
		l = []string{"volume"}
	}
	return &FuseOps{
		labelled: volumeLabel,
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "skiff_fuse_op_duration_seconds",
			Help:    "Time the file system took to answer a FUSE request, by operation.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, append(l, "op")),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_fuse_op_errors_total",
			Help: "FUSE requests answered with an error, by operation and errno.",
		}, append(l, "op", "errno")),
	}
}

// Describe implements prometheus.Collector.
func (f *FuseOps) Describe(ch chan<- *prometheus.Desc) {
	f.dur.Describe(ch)
	f.errs.Describe(ch)
}

// Collect implements prometheus.Collector.
func (f *FuseOps) Collect(ch chan<- prometheus.Metric) {
	f.dur.Collect(ch)
	f.errs.Collect(ch)
}

// OpObserver records the operations of one mount; its ObserveOp is
// what fsclient/fuse calls after each request.
type OpObserver struct {
	dur  prometheus.ObserverVec
	errs *prometheus.CounterVec
}

// Observer is the observer of volume's mount (volume is ignored when
// the instruments have no volume label).
func (f *FuseOps) Observer(volume string) *OpObserver {
	if !f.labelled {
		return &OpObserver{dur: f.dur, errs: f.errs}
	}
	l := prometheus.Labels{"volume": volume}
	return &OpObserver{dur: f.dur.MustCurryWith(l), errs: f.errs.MustCurryWith(l)}
}

// ObserveOp records one answered request.
func (o *OpObserver) ObserveOp(op string, d time.Duration, errno syscall.Errno) {
	o.dur.WithLabelValues(op).Observe(d.Seconds())
	if errno != 0 {
		o.errs.WithLabelValues(op, errnoName(errno)).Inc()
	}
}

func errnoName(e syscall.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return strconv.Itoa(int(e))
}
