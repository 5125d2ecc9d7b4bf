package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// Options tune Open. The zero value is the production default.
type Options struct {
	// OpTimeout bounds one operation (Update, View, Incr, one step of
	// Scan, and Open) as a whole: connecting, every command and the
	// retries after a broken connection. When it passes, the operation
	// fails with an error that names the server and the timeout (and does
	// not wrap context.DeadlineExceeded: to the application it is EIO).
	// Default 15s.
	OpTimeout time.Duration
	// DialTimeout bounds connecting (and the sentinel lookup). Default
	// 5s, at most OpTimeout.
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound one command. Default 10s each,
	// at most OpTimeout.
	ReadTimeout, WriteTimeout time.Duration
	// MaxIdle is the number of idle connections kept. Default 16.
	MaxIdle int
	// MaxActive caps open connections; 0 (the default) means no cap.
	// When capped, callers wait for a free connection.
	MaxActive int
	// IdleTimeout closes connections idle this long. Default 5m.
	IdleTimeout time.Duration
	// MaxRetries bounds how many times Update runs fn when it keeps
	// conflicting with other writers. Default 50.
	MaxRetries int
	// TLSConfig is used for rediss:// (for a private CA, client
	// certificates). Default: system roots, ServerName from the URL.
	TLSConfig *tls.Config
	// SentinelPassword authenticates to the sentinels of a
	// redis+sentinel:// URL, when they require it. Default none.
	SentinelPassword string
	// Logger receives retries and failovers at debug/info level.
	// Default: discard.
	Logger *slog.Logger
}

const (
	// connRetries bounds how often Update/View/Scan go on after a broken
	// connection (a restart, a failover) with exponential backoff from
	// 50ms to 1s: about 4.5s in all.
	connRetries = 8
	// borrowPingAfter: an idle connection older than this is PINGed
	// before reuse (younger ones get a cheap non-blocking socket check).
	borrowPingAfter = time.Minute
	// DefaultOpTimeout is Options.OpTimeout's default.
	DefaultOpTimeout = 15 * time.Second
	// redialEvery: while the server is known down, one operation at most
	// this often tries it for real; the others fail at once.
	redialEvery = 200 * time.Millisecond
)

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.OpTimeout, DefaultOpTimeout)
	def(&o.DialTimeout, 5*time.Second)
	def(&o.ReadTimeout, 10*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	o.DialTimeout = min(o.DialTimeout, o.OpTimeout)
	o.ReadTimeout = min(o.ReadTimeout, o.OpTimeout)
	o.WriteTimeout = min(o.WriteTimeout, o.OpTimeout)
	def(&o.IdleTimeout, 5*time.Minute)
	if o.MaxIdle <= 0 {
		o.MaxIdle = 16
	}
	if o.MaxRetries <= 0 {
		o.MaxRetries = 50
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Engine is the Redis kv.Engine. Create it with Open.
type Engine struct {
	cfg  *config
	opts Options
	tag  string
	pool *redis.Pool
	log  *slog.Logger

	master struct { // sentinel only: the resolved master
		sync.Mutex
		addr string
	}

	// down is what the engine knows of an outage (see admit).
	isDown atomic.Bool // down.since is set
	// answered: the server has answered once; an outage before that is
	// the opener's error to report, not a warning of its own.
	answered atomic.Bool
	down     struct {
		sync.Mutex
		since time.Time // first failure of this outage; zero when up
		last  time.Time // last real attempt while down
		err   error     // the last failure
	}

	// Counters for tests and metrics.
	conflicts atomic.Int64 // Update attempts lost to a concurrent writer
	reconns   atomic.Int64 // attempts retried after a broken connection

	// testHookBeforeCommit, when set, runs after fn and before the
	// commit is sent (tests restart the server there).
	testHookBeforeCommit func()
}

var _ kv.Engine = (*Engine)(nil)

// Open connects to the Redis named by a META_URL:
//
//	redis://[user:pass@]host[:port][/db][?prefix=NAME]
//	rediss://...                                   (TLS)
//	redis+sentinel://[user:pass@]host:port,host:port/MASTER[/db][?prefix=NAME]
//
// It checks that the server answers and accepts the credentials, and
// returns a one-line error saying what to fix when it does not.
func Open(ctx context.Context, url string, opts Options) (kv.Engine, error) {
	return open(ctx, url, opts)
}

func open(ctx context.Context, url string, opts Options) (*Engine, error) {
	cfg, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	opts.setDefaults()
	e := &Engine{cfg: cfg, opts: opts, tag: cfg.tag(), log: opts.Logger.With("meta", cfg.name())}
	e.pool = &redis.Pool{
		DialContext:         e.dial,
		TestOnBorrowContext: e.testOnBorrow,
		MaxIdle:             opts.MaxIdle,
		MaxActive:           opts.MaxActive,
		Wait:                opts.MaxActive > 0,
		IdleTimeout:         opts.IdleTimeout,
	}
	octx, cancel := context.WithTimeout(ctx, opts.OpTimeout)
	defer cancel()
	c, _, err := e.get(octx)
	if err == nil {
		_, err = redis.DoContext(c, octx, "PING")
		c.Close()
	}
	if err != nil && ctx.Err() == nil && octx.Err() != nil {
		err = &dialError{err: errors.New("timed out"),
			msg: fmt.Sprintf("redis at %s did not answer within %v (is the server hung or overloaded? check META_URL)", e.cfg.addrs[0], opts.OpTimeout)}
	}
	if err != nil {
		e.pool.Close()
		addr := e.cfg.addrs[0]
		if e.cfg.scheme == schemeSentinel {
			addr, _ = e.masterAddr(ctx, false)
		}
		return nil, explainDial(addr, e.cfg.db, err)
	}
	return e, nil
}

// Name is the META_URL without the password.
func (e *Engine) Name() string { return e.cfg.name() }

// Close closes every connection.
func (e *Engine) Close() error { return e.pool.Close() }

// key adds the volume's hash tag.
func (e *Engine) key(k string) string { return e.tag + k }

// fullConn is what redigo's own connections implement; the pool needs
// the context and timeout methods.
type fullConn interface {
	redis.Conn
	redis.ConnWithContext
	redis.ConnWithTimeout
}

// liveConn keeps the TCP connection under a redigo connection so that
// peerClosed can look at the socket.
type liveConn struct {
	fullConn
	raw net.Conn
}

// connSlot lets get learn which liveConn the pool handed out: the pool
// passes get's context to DialContext and TestOnBorrowContext.
type connSlot struct{ c *liveConn }
type slotKey struct{}

func setSlot(ctx context.Context, c *liveConn) {
	if s, ok := ctx.Value(slotKey{}).(*connSlot); ok {
		s.c = c
	}
}

// get borrows a connection. The *liveConn may be nil for foreign conns.
func (e *Engine) get(ctx context.Context) (redis.Conn, *liveConn, error) {
	if err := e.admit(); err != nil {
		return nil, nil, err
	}
	s := &connSlot{}
	c, err := e.pool.GetContext(context.WithValue(ctx, slotKey{}, s))
	if err != nil {
		return nil, nil, err
	}
	return c, s.c, nil
}

func (e *Engine) testOnBorrow(ctx context.Context, c redis.Conn, lastUsed time.Time) error {
	lc, ok := c.(*liveConn)
	if ok && peerClosed(lc.raw) {
		return errors.New("server closed the connection")
	}
	if time.Since(lastUsed) > borrowPingAfter {
		if _, err := c.Do("PING"); err != nil {
			return err
		}
	}
	if ok {
		setSlot(ctx, lc)
	}
	return nil
}

// dial opens one connection, to the server or to the master the
// sentinels name. Errors are already explained for the user.
func (e *Engine) dial(ctx context.Context) (redis.Conn, error) {
	c, err := e.dialServer(ctx)
	// A connection is no proof that the server answers (a hung one
	// accepts them): only a finished operation ends an outage.
	if err != nil && !isPermanent(err) && !errors.Is(ctx.Err(), context.Canceled) {
		e.markDown(err, false)
	}
	return c, err
}

func (e *Engine) dialServer(ctx context.Context) (redis.Conn, error) {
	if e.cfg.scheme != schemeSentinel {
		addr := e.cfg.addrs[0]
		c, err := e.dialAddr(ctx, addr)
		if err != nil {
			return nil, explainDial(addr, e.cfg.db, err)
		}
		setSlot(ctx, c)
		return c, nil
	}
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		addr, err := e.masterAddr(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		c, err := e.dialAddr(ctx, addr)
		if err == nil {
			var role string
			role, err = roleOf(c)
			if err == nil && role != "master" {
				err = fmt.Errorf("%s is a %s now, not the master", addr, role)
			}
			if err == nil {
				setSlot(ctx, c)
				return c, nil
			}
			c.Close()
		}
		lastErr = explainDial(addr, e.cfg.db, err)
		if isPermanent(lastErr) {
			return nil, lastErr
		}
		e.forgetMaster(addr)
	}
	return nil, lastErr
}

func roleOf(c redis.Conn) (string, error) {
	vs, err := redis.Values(c.Do("ROLE"))
	if err != nil {
		return "", err
	}
	if len(vs) == 0 {
		return "", errors.New("empty ROLE reply")
	}
	return redis.String(vs[0], nil)
}

func (e *Engine) dialAddr(ctx context.Context, addr string) (*liveConn, error) {
	ctx, cancel := context.WithTimeout(ctx, e.opts.DialTimeout)
	defer cancel()
	var raw net.Conn
	d := &net.Dialer{Timeout: e.opts.DialTimeout, KeepAlive: time.Minute}
	opts := []redis.DialOption{
		redis.DialContextFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			raw = c
			return c, err
		}),
		redis.DialReadTimeout(e.opts.ReadTimeout),
		redis.DialWriteTimeout(e.opts.WriteTimeout),
		redis.DialTLSHandshakeTimeout(e.opts.DialTimeout),
		redis.DialDatabase(e.cfg.db),
		redis.DialUsername(e.cfg.user),
		redis.DialPassword(e.cfg.password),
		redis.DialUseTLS(e.cfg.tls),
	}
	if e.opts.TLSConfig != nil {
		opts = append(opts, redis.DialTLSConfig(e.opts.TLSConfig))
	}
	c, err := redis.DialContext(ctx, "tcp", addr, opts...)
	if err != nil {
		return nil, err
	}
	fc, ok := c.(fullConn)
	if !ok {
		c.Close()
		return nil, errors.New("redigo connection lacks context support")
	}
	return &liveConn{fullConn: fc, raw: raw}, nil
}

// masterAddr returns the cached master, asking the sentinels when there
// is none or refresh is set.
func (e *Engine) masterAddr(ctx context.Context, refresh bool) (string, error) {
	e.master.Lock()
	defer e.master.Unlock()
	if e.master.addr != "" && !refresh {
		return e.master.addr, nil
	}
	addr, err := e.askSentinels(ctx)
	if err != nil {
		return "", err
	}
	if addr != e.master.addr {
		e.log.Info("redis master resolved by sentinel", "master", e.cfg.master, "addr", addr)
	}
	e.master.addr = addr
	return addr, nil
}

// forgetMaster drops the cached master if it is still addr.
func (e *Engine) forgetMaster(addr string) {
	e.master.Lock()
	if addr == "" || e.master.addr == addr {
		e.master.addr = ""
	}
	e.master.Unlock()
}

// askSentinels runs SENTINEL get-master-addr-by-name on each sentinel in
// turn; the first answer wins.
func (e *Engine) askSentinels(ctx context.Context) (string, error) {
	var problems []string
	for _, s := range e.cfg.addrs {
		addr, err := e.askSentinel(ctx, s)
		if err == nil {
			return addr, nil
		}
		problems = append(problems, err.Error())
	}
	return "", &dialError{err: errors.New("no sentinel answered"),
		msg: fmt.Sprintf("no redis sentinel could name master %q: %s (check META_URL)", e.cfg.master, strings.Join(problems, "; "))}
}

func (e *Engine) askSentinel(ctx context.Context, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, e.opts.DialTimeout)
	defer cancel()
	opts := []redis.DialOption{
		redis.DialConnectTimeout(e.opts.DialTimeout),
		redis.DialReadTimeout(e.opts.DialTimeout),
		redis.DialWriteTimeout(e.opts.DialTimeout),
		redis.DialPassword(e.opts.SentinelPassword),
	}
	c, err := redis.DialContext(ctx, "tcp", addr, opts...)
	if err != nil {
		return "", explainDial(addr, 0, err)
	}
	defer c.Close()
	hp, err := redis.Strings(redis.DoContext(c, ctx, "SENTINEL", "get-master-addr-by-name", e.cfg.master))
	switch {
	case errors.Is(err, redis.ErrNil):
		return "", fmt.Errorf("sentinel %s does not know master %q", addr, e.cfg.master)
	case err != nil:
		return "", fmt.Errorf("sentinel %s: %v", addr, err)
	case len(hp) != 2:
		return "", fmt.Errorf("sentinel %s: odd reply %q", addr, hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// noteBroken is called when a connection failed: after a READONLY reply
// (a failover) the sentinels are asked again.
func (e *Engine) noteBroken(err error) {
	e.reconns.Add(1)
	if e.cfg.scheme == schemeSentinel && (isReadOnly(err) || !isPermanent(err)) {
		e.forgetMaster("")
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// jitter returns a random duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

func conflictBackoff(attempt int) time.Duration {
	return jitter(min(time.Millisecond<<min(attempt, 7), 100*time.Millisecond))
}

func connBackoff(n int) time.Duration {
	return jitter(min(50*time.Millisecond<<min(n, 5), time.Second))
}

// outcome of one attempt of Update.
type outcome int

const (
	finished  outcome = iota // return the error (nil = committed)
	conflict                 // a watched key changed: run fn again
	reconnect                // the connection broke before the commit was sent
)

// Update runs fn with optimistic locking: reads WATCH their keys, writes
// are buffered, and the commit is MULTI + writes + EXEC on the same
// connection. See the package documentation for the guarantees.
func (e *Engine) Update(ctx context.Context, fn func(tx kv.Tx) error) error {
	return e.bounded(ctx, "transaction", func(ctx context.Context) error { return e.update(ctx, fn) })
}

func (e *Engine) update(ctx context.Context, fn func(tx kv.Tx) error) error {
	start := time.Now()
	broken := 0
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		out, err := e.attempt(ctx, fn)
		switch out {
		case finished:
			return err
		case conflict:
			e.conflicts.Add(1)
			if attempt >= e.opts.MaxRetries {
				return fmt.Errorf("redis %s: gave up after %d attempts: %w", e.cfg.name(), attempt, kv.ErrConflict)
			}
			e.log.Debug("redis transaction conflict, retrying", "attempt", attempt)
			if err := sleep(ctx, conflictBackoff(attempt)); err != nil {
				return err
			}
		case reconnect:
			e.noteBroken(err)
			if broken >= connRetries || e.downBefore(start) {
				return fmt.Errorf("redis %s: %w", e.cfg.name(), err)
			}
			e.log.Info("redis connection broke before commit, retrying", "err", err, "retry", broken+1)
			if err := retryWait(ctx, broken, err); err != nil {
				return err
			}
			broken++
		}
	}
}

// attempt runs fn once and tries to commit.
func (e *Engine) attempt(ctx context.Context, fn func(tx kv.Tx) error) (outcome, error) {
	c, lc, err := e.get(ctx)
	if err != nil {
		return borrowFailed(ctx, err)
	}
	defer c.Close() // UNWATCH or DISCARD as needed, or drop a broken conn
	t := newTx(e, c, ctx, false)
	ferr := fn(t)
	t.done = true
	if err := ctx.Err(); err != nil {
		return finished, err
	}
	if t.broken {
		// fn saw a broken connection (whatever it made of it).
		return reconnect, t.err
	}
	if ferr != nil {
		// Was fn's error computed from a stale view? An empty
		// MULTI/EXEC fails exactly when a watched key changed.
		if len(t.watched) > 0 {
			if out, _ := e.exec(ctx, c, lc, nil); out == conflict {
				return conflict, nil
			}
		}
		return finished, ferr
	}
	if t.err != nil {
		return finished, t.err
	}
	if len(t.cmds) == 0 && len(t.watched) == 0 {
		return finished, nil
	}
	if e.testHookBeforeCommit != nil {
		e.testHookBeforeCommit()
	}
	return e.exec(ctx, c, lc, t.cmds)
}

// borrowFailed classifies a failure to get a connection.
func borrowFailed(ctx context.Context, err error) (outcome, error) {
	if ctx.Err() != nil {
		return finished, ctx.Err()
	}
	if isPermanent(err) {
		return finished, err
	}
	return reconnect, err
}

// commitUnknown is the error for a commit whose outcome is unknown.
type commitUnknown struct{ addr, cause string }

func (e *commitUnknown) Error() string {
	return fmt.Sprintf("redis %s: connection broke after EXEC was sent (%s): the transaction may or may not have been applied", e.addr, e.cause)
}
func (e *commitUnknown) Unwrap() error { return kv.ErrCommitUnknown }

// exec sends MULTI, cmds and EXEC and reads the replies. With no cmds it
// only checks that no watched key changed (nothing can be half applied,
// so a broken connection is simply retried).
func (e *Engine) exec(ctx context.Context, c redis.Conn, lc *liveConn, cmds []command) (outcome, error) {
	if lc != nil && peerClosed(lc.raw) {
		return reconnect, errors.New("the server closed the connection")
	}
	if err := c.Send("MULTI"); err != nil {
		return reconnect, err
	}
	for _, cmd := range cmds {
		if err := c.Send(cmd.name, cmd.args...); err != nil {
			return reconnect, err
		}
	}
	// Everything up to EXEC is on the wire or failed: without EXEC the
	// server discards the transaction when the connection drops.
	if err := c.Flush(); err != nil {
		return reconnect, err
	}
	if err := c.Send("EXEC"); err != nil {
		return e.afterExec(cmds, err)
	}
	if err := c.Flush(); err != nil {
		return e.afterExec(cmds, err)
	}
	var queueErr error
	for i := 0; i <= len(cmds); i++ { // MULTI's OK, then QUEUED per command
		_, err := redis.ReceiveContext(c, ctx)
		var re redis.Error
		if err != nil && !errors.As(err, &re) {
			return e.afterExec(cmds, err)
		}
		if err != nil && queueErr == nil {
			queueErr = err
			if i > 0 {
				queueErr = fmt.Errorf("%s: %w", cmds[i-1].name, err)
			}
		}
	}
	reply, err := redis.ReceiveContext(c, ctx)
	var re redis.Error
	switch {
	case err != nil && !errors.As(err, &re):
		return e.afterExec(cmds, err)
	case err != nil: // EXECABORT: nothing was applied
		if queueErr != nil {
			err = queueErr
		}
		if isTransient(err) {
			return reconnect, err
		}
		return finished, fmt.Errorf("redis %s rejected the transaction: %w", e.cfg.name(), err)
	case reply == nil:
		return conflict, nil
	}
	results, _ := reply.([]any)
	for i, r := range results {
		if rerr, ok := r.(redis.Error); ok && i < len(cmds) {
			// A run-time error (e.g. WRONGTYPE): Redis applied the
			// other commands. This is a bug in the caller's key use.
			return finished, fmt.Errorf("redis %s: %s %q failed inside an applied transaction: %v (the other writes were applied)",
				e.cfg.name(), cmds[i].name, cmds[i].args[0], rerr)
		}
	}
	return finished, nil
}

func (e *Engine) afterExec(cmds []command, err error) (outcome, error) {
	if len(cmds) == 0 {
		return reconnect, err
	}
	return finished, &commitUnknown{addr: e.cfg.name(), cause: err.Error()}
}

// View runs fn with plain reads (no WATCH, no MULTI). Each read is
// atomic on its own; MGet and HGetAll are single commands.
func (e *Engine) View(ctx context.Context, fn func(tx kv.Tx) error) error {
	return e.bounded(ctx, "read", func(ctx context.Context) error { return e.view(ctx, fn) })
}

func (e *Engine) view(ctx context.Context, fn func(tx kv.Tx) error) error {
	start := time.Now()
	for broken := 0; ; broken++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, _, err := e.get(ctx)
		if err != nil {
			out, err := borrowFailed(ctx, err)
			if out == finished || broken >= connRetries || e.downBefore(start) {
				return err
			}
			e.noteBroken(err)
			if err := retryWait(ctx, broken, err); err != nil {
				return err
			}
			continue
		}
		t := newTx(e, c, ctx, true)
		ferr := fn(t)
		t.done = true
		c.Close()
		if err := ctx.Err(); err != nil {
			return err
		}
		if t.broken && broken < connRetries && !e.downBefore(start) {
			e.noteBroken(t.err)
			if err := retryWait(ctx, broken, t.err); err != nil {
				return err
			}
			continue // fn has no effects: run it again
		}
		if ferr != nil {
			return ferr
		}
		return t.err
	}
}

// Incr is INCRBY. It is not retried once sent: a broken connection then
// gives an error wrapping kv.ErrCommitUnknown.
func (e *Engine) Incr(ctx context.Context, key string, delta int64) (int64, error) {
	var n int64
	err := e.bounded(ctx, "incrby", func(ctx context.Context) error {
		var err error
		n, err = e.incr(ctx, key, delta)
		return err
	})
	return n, err
}

func (e *Engine) incr(ctx context.Context, key string, delta int64) (int64, error) {
	c, _, err := e.get(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	n, err := redis.Int64(redis.DoContext(c, ctx, "INCRBY", e.key(key), delta))
	if err != nil {
		var re redis.Error
		if !errors.As(err, &re) && ctx.Err() == nil {
			return 0, &commitUnknown{addr: e.cfg.name(), cause: "INCRBY " + key + ": " + err.Error()}
		}
		return 0, fmt.Errorf("redis incrby %q: %w", key, err)
	}
	return n, nil
}

// globEscape quotes the characters SCAN MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Scan walks SCAN cursor MATCH {tag}prefix* COUNT 1000. The cursor lives
// in the client, so a broken connection resumes on a new one.
func (e *Engine) Scan(ctx context.Context, prefix string, fn func(key string) bool) error {
	pattern := globEscape(e.tag+prefix) + "*"
	cursor := "0"
	broken := 0
	start := time.Now()
	var failedAt time.Time // first failure since the last answer
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var keys []string
		var next string
		err := e.bounded(ctx, "scan", func(ctx context.Context) error {
			var err error
			keys, next, err = e.scanStep(ctx, cursor, pattern)
			return err
		})
		if err != nil {
			var terr *timeoutError
			if !isTransient(err) || ctx.Err() != nil || broken >= connRetries || e.downBefore(start) ||
				errors.As(err, &terr) || (!failedAt.IsZero() && time.Since(failedAt) > e.opts.OpTimeout) {
				return fmt.Errorf("redis %s scan %q: %w", e.cfg.name(), prefix, err)
			}
			if failedAt.IsZero() {
				failedAt = time.Now()
			}
			e.noteBroken(err)
			if err := retryWait(ctx, broken, err); err != nil {
				return err
			}
			broken++
			continue
		}
		failedAt = time.Time{}
		for _, k := range keys {
			if !strings.HasPrefix(k, e.tag) {
				continue
			}
			if !fn(k[len(e.tag):]) {
				return nil
			}
		}
		if next == "0" {
			return nil
		}
		cursor = next
	}
}

func (e *Engine) scanStep(ctx context.Context, cursor, pattern string) ([]string, string, error) {
	c, _, err := e.get(ctx)
	if err != nil {
		return nil, "", err
	}
	defer c.Close()
	vs, err := redis.Values(redis.DoContext(c, ctx, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000))
	if err != nil {
		return nil, "", err
	}
	if len(vs) != 2 {
		return nil, "", fmt.Errorf("odd SCAN reply of %d elements", len(vs))
	}
	next, err := redis.String(vs[0], nil)
	if err != nil {
		return nil, "", err
	}
	keys, err := redis.Strings(vs[1], nil)
	return keys, next, err
}
