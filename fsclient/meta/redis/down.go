package redis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// An outage is ridden out for its first downGrace (a restart, a
// failover: operations retry on new connections, up to OpTimeout). Once
// it is older, or as soon as one operation ran out of OpTimeout (a hung
// server), the server is known down: operations fail at once with the
// last failure instead of each dialling and waiting, and one operation
// per redialEvery goes through as a probe. A successful operation ends
// the outage.

// downGrace is how young an outage is still ridden out.
func (e *Engine) downGrace() time.Duration { return min(time.Second, e.opts.OpTimeout/2) }

// admit lets an operation go on to the server, or fails it at once while
// the server is known down.
func (e *Engine) admit() error {
	if !e.isDown.Load() {
		return nil
	}
	e.down.Lock()
	defer e.down.Unlock()
	now := time.Now()
	if e.down.since.IsZero() || now.Sub(e.down.since) < e.downGrace() {
		return nil
	}
	if now.Sub(e.down.last) >= redialEvery {
		e.down.last = now // this one probes
		return nil
	}
	return &downError{addr: e.cfg.name(), since: e.down.since, err: e.down.err}
}

// markDown records a failure to reach the server. known skips the grace:
// an operation already waited OpTimeout for it.
func (e *Engine) markDown(err error, known bool) {
	if errors.Is(err, context.DeadlineExceeded) {
		// Never let a stored failure read as the caller's deadline.
		err = fmt.Errorf("no answer within %v", e.opts.OpTimeout)
	}
	e.down.Lock()
	defer e.down.Unlock()
	now := time.Now()
	if e.down.since.IsZero() {
		e.down.since = now
		e.isDown.Store(true)
		if e.answered.Load() {
			e.log.Warn("redis unreachable; operations fail fast while it stays down", "err", err)
		}
	}
	if early := now.Add(-e.downGrace()); known && e.down.since.After(early) {
		e.down.since = early
	}
	e.down.last, e.down.err = now, err
}

// up records that the server answered.
func (e *Engine) up() {
	if !e.answered.Load() {
		e.answered.Store(true)
	}
	if !e.isDown.Load() {
		return
	}
	e.down.Lock()
	defer e.down.Unlock()
	if !e.down.since.IsZero() {
		e.log.Info("redis answers again", "down", time.Since(e.down.since).Round(time.Millisecond))
	}
	e.down.since, e.down.err = time.Time{}, nil
	e.isDown.Store(false)
}

// downBefore reports whether the server was already known down when an
// operation started at t: such an operation does not retry.
func (e *Engine) downBefore(t time.Time) bool {
	if !e.isDown.Load() {
		return false
	}
	e.down.Lock()
	defer e.down.Unlock()
	return !e.down.since.IsZero() && e.down.since.Add(e.downGrace()).Before(t)
}

// downError fails an operation at once while the server is known down.
type downError struct {
	addr  string
	since time.Time
	err   error
}

func (d *downError) Error() string {
	return fmt.Sprintf("redis is down (for %v; failing fast until it answers): %v",
		time.Since(d.since).Round(time.Millisecond), d.err)
}

func (d *downError) Unwrap() error { return d.err }

// timeoutError is an operation that OpTimeout ended. It does not wrap
// context.DeadlineExceeded: the caller's own deadline did not pass.
type timeoutError struct {
	addr, what string
	d          time.Duration
	cause      string
}

func (t *timeoutError) Error() string {
	return fmt.Sprintf("redis %s: %s got no answer within %v (the metadata timeout): %s", t.addr, t.what, t.d, t.cause)
}

// bounded runs op under OpTimeout and turns the end of that time into a
// timeoutError (an outcome-unknown commit keeps its error).
func (e *Engine) bounded(ctx context.Context, what string, op func(ctx context.Context) error) error {
	octx, cancel := context.WithTimeout(ctx, e.opts.OpTimeout)
	defer cancel()
	err := op(octx)
	switch {
	case err == nil:
		e.up()
		return nil
	case ctx.Err() != nil || (octx.Err() == nil && !errors.Is(err, os.ErrDeadlineExceeded)):
		return err
	}
	var de *downError
	if errors.As(err, &de) {
		return err // already known down: keep the first cause
	}
	// OpTimeout (or a command's read timeout, at most OpTimeout) passed:
	// the server is gone or hung. Later operations fail fast until it
	// answers again.
	terr := &timeoutError{addr: e.cfg.name(), what: what, d: e.opts.OpTimeout, cause: err.Error()}
	e.markDown(terr, true)
	if errors.Is(err, kv.ErrCommitUnknown) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return terr
	}
	return err
}

// retryWait sleeps before retry n of an operation that failed with
// lastErr. When ctx is canceled first, the error is the cancellation;
// when its deadline passes, it is lastErr (what kept failing).
func retryWait(ctx context.Context, n int, lastErr error) error {
	if err := sleep(ctx, connBackoff(n)); err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("%w (retrying after: %v)", err, lastErr)
		}
		return lastErr
	}
	return nil
}
