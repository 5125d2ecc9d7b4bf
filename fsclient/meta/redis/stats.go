package redis

// TxRetries reports how many transaction attempts this engine re-ran:
// conflicts lost to a concurrent writer (WATCH fired) and attempts
// retried after a broken connection. Both only grow. Monitoring reads
// them (the sidecar's /metrics) through an interface, without importing
// this package.
func (e *Engine) TxRetries() (conflicts, reconnects int64) {
	return e.conflicts.Load(), e.reconns.Load()
}
