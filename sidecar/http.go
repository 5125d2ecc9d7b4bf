package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skiff-fs/skiff/sidecar/contract"
)

// Handler serves contract.PathReady, PathHealth and PathMetrics.
func (s *Sidecar) Handler() http.Handler {
	mux := http.NewServeMux()
	// The probe port listens on every address of the pod, so any pod of
	// the cluster may ask: bodies say only ok or not, and the reason goes
	// to the container log (once per change of reason).
	var ready, health reasonLog
	mux.HandleFunc(contract.PathReady, func(w http.ResponseWriter, r *http.Request) {
		err := s.Ready()
		ready.note(s.log, "not ready", err)
		answer(w, err, "not ready")
	})
	mux.HandleFunc(contract.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		err := s.Healthy()
		health.note(s.log, "not healthy", err)
		answer(w, err, "not healthy")
	})
	mux.Handle(contract.PathMetrics, promhttp.HandlerFor(gatherer{s}, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: slogPrinter{s.log}}))
	return mux
}

// answer writes "ok", or status 503 with the generic body notOK: never
// the error, whose text may name hosts and paths of the volume.
func answer(w http.ResponseWriter, err error, notOK string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, notOK)
		return
	}
	fmt.Fprintln(w, "ok")
}

// reasonLog logs a probe's failure reason when it changes, so that a
// probe every few seconds does not flood the log.
type reasonLog struct {
	mu   sync.Mutex
	last string
}

func (l *reasonLog) note(log *slog.Logger, what string, err error) {
	reason := ""
	if err != nil {
		reason = err.Error()
	}
	l.mu.Lock()
	changed := reason != l.last
	l.last = reason
	l.mu.Unlock()
	if changed && err != nil {
		log.Warn("probe: "+what, "reason", reason)
	}
}

// Probe asks the sidecar listening on port of this host for path
// (contract.PathReady or PathHealth), for `skiff-sidecar probe`. It
// returns nil on 200 and an error carrying the sidecar's answer
// otherwise.
func Probe(ctx context.Context, port int, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// slogPrinter logs the errors of a scrape (a worker that could not be
// reached) as warnings.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.log.Warn("metrics: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
