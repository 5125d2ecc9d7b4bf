package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skiff-fs/skiff/sidecar/contract"
)

// Handler serves contract.PathReady, PathHealth and PathMetrics.
func (s *Sidecar) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(contract.PathReady, func(w http.ResponseWriter, r *http.Request) {
		answer(w, s.Ready())
	})
	mux.HandleFunc(contract.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		answer(w, s.Healthy())
	})
	mux.Handle(contract.PathMetrics, promhttp.HandlerFor(gatherer{s}, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: slogPrinter{s.log}}))
	return mux
}

func answer(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintln(w, "ok")
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
