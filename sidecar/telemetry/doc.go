// Package telemetry is what the processes of a skiff mount report and how
// the sidecar collects it: the volume counters as Prometheus metrics
// (object requests and bytes, cache hits, write-buffer use, meta
// transaction retries), FUSE per-operation latency and errors, the
// metrics socket a supervised worker serves, and the status file of
// `skiff mount --supervise`.
//
// # Metrics
//
// Collector reads Stats at scrape time. With a volume label it serves
// many volumes (the sidecar in direct mode); without, the one volume of
// the process (`skiff mount --metrics-socket`, and each supervised
// worker). Metric names are the same either way, so the sidecar can
// gather a worker's families and add the volume label itself.
//
// # The metrics socket
//
// Listen binds a unix socket at a path, replacing a socket file a dead
// process left there (a worker killed with SIGKILL cannot remove it),
// with mode 0600. Serve answers GET /metrics in the Prometheus text
// format. Scrape reads it back as metric families. Each new worker of a
// supervised mount binds the same path again, so the sidecar always
// reaches the current worker; counters start from zero with each worker
// (Prometheus treats that as a counter reset). Between a worker's death
// and its successor's start, Scrape fails with a connection error.
//
// # The status file
//
// WriteStatus replaces the file atomically (write to a temporary file,
// rename), so a reader sees a whole JSON document or the previous one,
// never a partial one.
package telemetry
