package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/fuse"
)

// Config describes a supervised mount. Zero values mean the documented
// defaults.
type Config struct {
	// Mountpoint is an existing empty directory.
	Mountpoint string
	// FsName is the source mount(8) shows. Default "skiff".
	FsName string
	// Subtype makes the type fuse.<Subtype>. Default "skiff".
	Subtype string
	// AllowOther lets every user use the mount.
	AllowOther bool
	// ReadOnly mounts read-only.
	ReadOnly bool
	// ReadAhead is the kernel's read-ahead window for the mount's files,
	// set on its backing device once mounted (fuse.SetReadAhead; as
	// root). Default fuse.DefaultReadAhead; negative keeps the kernel's.
	ReadAhead int
	// MaxWrite is the largest READ and WRITE request in bytes. Default
	// 1 MiB; lowered when the relay socket cannot carry it.
	MaxWrite int
	// Worker is the command that runs the file system (see Attach).
	Worker Command
	// Logger gets the supervisor's log. Default: discard.
	Logger *slog.Logger

	// MaxRestarts within RestartWindow is the crash-loop limit: past it
	// the supervisor gives up, detaches the mount and Wait returns an
	// error. Defaults 5 and one minute.
	MaxRestarts   int
	RestartWindow time.Duration
	// Backoff before a restart doubles from BackoffMin to BackoffMax.
	// Defaults 50ms and 5s.
	BackoffMin, BackoffMax time.Duration
	// StartTimeout bounds a worker's start: exec to ready. Default 1 min.
	StartTimeout time.Duration
	// DrainTimeout bounds the wait for the old worker's requests during
	// an upgrade; what is left is re-sent to the new one. Default 10s.
	DrainTimeout time.Duration
	// JournalSync: once the acknowledged but not yet committed writes of
	// an inode exceed this many bytes, the supervisor asks the worker to
	// fsync it, so that the copies it keeps (to replay them into a new
	// worker) stay bounded. Default 32 MiB.
	JournalSync int
	// Readers is the number of goroutines reading /dev/fuse and each
	// worker's socket. Default 2.
	Readers int
	// HandOffSocket, when set, is a unix socket path where the supervisor
	// listens for a new supervisor (Adopt) to take the connection over.
	// Only root may connect (mode 0600).
	HandOffSocket string
	// OOMScoreAdj is set on the supervisor (default -999) and
	// WorkerOOMScoreAdj on each worker (default 1000), so that the OOM
	// killer picks the worker. Lowering needs CAP_SYS_RESOURCE; failures
	// are logged at debug level.
	OOMScoreAdj, WorkerOOMScoreAdj int
}

// Command is how to start a worker. The worker gets the control socket as
// descriptor WorkerControlFD (3).
type Command struct {
	Path string
	Args []string // after argv[0]
	// Env of the worker; nil: the supervisor's.
	Env []string
	// Stdout and Stderr of the worker; nil: the supervisor's stderr.
	Stdout, Stderr io.Writer

	// exe pins the executable that was at Path when the supervisor took
	// the command: restarts run that file even after another one has been
	// renamed onto Path (an upgrade delivered in place), so a broken
	// delivery cannot take the fallback down with it.
	exe *os.File
}

// pin opens the command's executable (see Command.exe).
func (c Command) pin() (Command, error) {
	if c.exe != nil {
		return c, nil
	}
	f, err := os.Open(c.Path)
	if err != nil {
		return c, fmt.Errorf("supervisor: worker binary: %w", err)
	}
	defer f.Close()
	// Well above the descriptors exec.Cmd moves into place in the child
	// (0-2 and ExtraFiles), which would overwrite a low one before execve.
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 64)
	if err != nil {
		return c, fmt.Errorf("supervisor: worker binary %s: %w", c.Path, err)
	}
	c.exe = os.NewFile(uintptr(fd), c.Path)
	return c, nil
}

// unpin closes the pinned executable.
func (c Command) unpin() {
	if c.exe != nil {
		c.exe.Close()
	}
}

// argv0 returns the path to execute and argv[0] for it.
func (c Command) argv0() (path, arg0 string) {
	if c.exe == nil {
		return c.Path, c.Path
	}
	return "/proc/self/fd/" + strconv.Itoa(int(c.exe.Fd())), c.Path
}

func (c *Config) setDefaults() error {
	if c.Mountpoint == "" {
		return errors.New("supervisor: no mountpoint")
	}
	if c.Worker.Path == "" {
		return errors.New("supervisor: no worker command")
	}
	abs, err := filepath.Abs(c.Mountpoint)
	if err != nil {
		return err
	}
	c.Mountpoint = abs
	if c.Worker, err = c.Worker.pin(); err != nil {
		return err
	}
	if c.FsName == "" {
		c.FsName = "skiff"
	}
	if c.Subtype == "" {
		c.Subtype = "skiff"
	}
	if c.MaxWrite <= 0 {
		c.MaxWrite = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxRestarts <= 0 {
		c.MaxRestarts = 5
	}
	if c.RestartWindow <= 0 {
		c.RestartWindow = time.Minute
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 50 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 5 * time.Second
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = time.Minute
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.JournalSync <= 0 {
		c.JournalSync = 32 << 20
	}
	if c.Readers <= 0 {
		c.Readers = 2
	}
	if c.OOMScoreAdj == 0 {
		c.OOMScoreAdj = -999
	}
	if c.WorkerOOMScoreAdj == 0 {
		c.WorkerOOMScoreAdj = 1000
	}
	return nil
}

// Supervisor owns a FUSE connection and relays it to a worker process,
// which it replaces when it dies or on Upgrade. See the package
// documentation.
type Supervisor struct {
	cfg      Config
	log      *slog.Logger
	dev      *rawFD // /dev/fuse
	maxWrite int
	bufSize  int
	bufs     sync.Pool // *[]byte of bufSize

	initReq []byte  // the kernel's INIT, replayed into new workers
	initOut initOut // what the first worker answered
	// kernelChecks: the mount has default_permissions (every mount
	// this package makes; an adopted one says so in its state).
	kernelChecks bool

	// lifecycle requests, served by run
	died       chan *worker
	upgrades   chan upgradeReq
	shutdowns  chan shutdownReq
	handoffs   chan *net.UnixConn
	unmounted  chan struct{} // closed by the first reader seeing ENODEV
	unmountOne sync.Once
	done       chan struct{}
	err        error
	handedOff  bool // the connection went to another supervisor

	handOffL    *net.UnixListener // nil without Config.HandOffSocket
	handOffStop chan struct{}     // closed to stop the accept loop
	accepts     sync.WaitGroup    // the accept loop

	readers sync.WaitGroup // /dev/fuse readers

	// current is the worker run believes in (only run touches it).
	current *worker

	// mu guards the relay state. Never held during I/O.
	mu struct {
		sync.Mutex
		active     *worker // receives new requests; nil while paused
		seq        uint64  // orders dispatches and journal entries
		synth      uint64  // last synthetic unique (without the high bit)
		pending    map[uint64]*pending
		interrupts map[uint64][]byte // by the interrupted unique
		handles    map[uint64]fuse.Handle
		maxFh      uint64
		journal    map[uint64]*journal // by inode
		synthetic  map[uint64]synthReq
		version    string
		gen        int
		restarts   []time.Time
		stopping   bool
	}
}

// pending is a request the kernel waits for.
type pending struct {
	buf    []byte
	pooled *[]byte // the pool buffer behind buf, if any
	op     uint32
	nodeid uint64
	seq    uint64 // dispatch order
	jseq   uint64 // when journaled: order of the acknowledgement
	gen    int    // worker it was sent to; 0: none yet
}

// journal holds the acknowledged writes of one inode that no flush has
// committed yet.
type journal struct {
	writes  []*pending
	bytes   int
	syncing bool
	fh      uint64 // handle of the last write, for the synthetic fsync
}

// synthReq is a request the supervisor made itself.
type synthReq struct {
	ino   uint64
	seq   uint64
	fsync bool // else a replayed write
}

type upgradeReq struct {
	cmd   Command
	reply chan upgradeResult
}

type upgradeResult struct {
	version string
	err     error
}

type shutdownReq struct {
	ctx   context.Context
	reply chan error
}

// Start mounts the file system at cfg.Mountpoint, starts the first worker
// and relays until Shutdown, an unmount, a hand-off or a crash loop. When
// it returns the mount answers.
func Start(cfg Config) (*Supervisor, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := fuse.CheckMountpoint(cfg.Mountpoint); err != nil {
		return nil, err
	}
	s := newSupervisor(cfg)

	// The relay socket must carry one message of MaxWrite plus headers.
	granted, err := relayBuffer(cfg.MaxWrite)
	if err != nil {
		return nil, err
	}
	maxWrite := cfg.MaxWrite
	if limit := (granted - 32 - 4096) &^ (os.Getpagesize() - 1); limit < maxWrite {
		s.log.Warn("supervisor: the relay socket's send buffer limits requests; raise net.core.wmem_max or grant CAP_NET_ADMIN", "max_write", limit, "wanted", cfg.MaxWrite)
		maxWrite = max(limit, 64<<10)
	}
	s.setMaxWrite(maxWrite)

	dev, err := mountFUSE(&s.cfg, s.maxWrite)
	if err != nil {
		return nil, err
	}
	s.dev = dev
	s.kernelChecks = true
	fail := func(err error) (*Supervisor, error) {
		unix.Unmount(cfg.Mountpoint, unix.MNT_DETACH)
		dev.close()
		return nil, err
	}
	// The kernel's first message is INIT.
	buf := make([]byte, s.bufSize)
	n, err := dev.read(buf, time.Now().Add(cfg.StartTimeout))
	if err != nil {
		return fail(fmt.Errorf("supervisor: read FUSE INIT: %w", err))
	}
	if h, ok := parseIn(buf[:n]); !ok || h.opcode != opInit {
		return fail(fmt.Errorf("supervisor: first FUSE request is not INIT"))
	}
	s.initReq = append([]byte(nil), buf[:n]...)

	w, reply, err := s.start(cfg.Worker, true)
	if err != nil {
		return fail(err)
	}
	if err := dev.write(reply); err != nil {
		w.kill()
		return fail(fmt.Errorf("supervisor: answer FUSE INIT: %w", err))
	}
	if cfg.ReadAhead == 0 {
		cfg.ReadAhead = fuse.DefaultReadAhead
	}
	if cfg.ReadAhead > 0 {
		// No FUSE request: safe before the readers start. Worker restarts
		// and hand-offs keep the connection, so the setting stays.
		if err := fuse.SetReadAhead(cfg.Mountpoint, cfg.ReadAhead); err != nil {
			s.log.Warn("supervisor: cannot set the kernel's read-ahead; sequential reads stay at the kernel's 128 KiB window", "err", err)
		}
	}
	s.current = w
	s.mu.Lock()
	s.mu.active = w
	s.mu.Unlock()
	if err := s.listenHandOff(true); err != nil {
		s.stopWorker(w, 30*time.Second)
		return fail(err)
	}
	s.startReaders()
	go s.run()
	// Once per connection, so that no Go process opening files on the
	// mount (this one included) waits on a POLL in epoll_ctl.
	if err := fuse.DisablePoll(cfg.Mountpoint); err != nil {
		s.log.Warn("supervisor: cannot switch FUSE poll off", "err", err)
	}
	s.log.Info("supervisor: mounted", "worker_pid", w.cmd.Process.Pid, "version", w.version)
	return s, nil
}

func newSupervisor(cfg Config) *Supervisor {
	s := &Supervisor{
		cfg:         cfg,
		log:         cfg.Logger.With("mountpoint", cfg.Mountpoint),
		died:        make(chan *worker),
		upgrades:    make(chan upgradeReq),
		shutdowns:   make(chan shutdownReq),
		handoffs:    make(chan *net.UnixConn),
		handOffStop: make(chan struct{}),
		unmounted:   make(chan struct{}),
		done:        make(chan struct{}),
	}
	s.mu.pending = make(map[uint64]*pending)
	s.mu.interrupts = make(map[uint64][]byte)
	s.mu.handles = make(map[uint64]fuse.Handle)
	s.mu.journal = make(map[uint64]*journal)
	s.mu.synthetic = make(map[uint64]synthReq)
	if err := setOOMScoreAdj(0, cfg.OOMScoreAdj); err != nil {
		s.log.Debug("supervisor: cannot set own oom_score_adj", "err", err)
	}
	return s
}

// relayBuffer returns the send buffer a relay socket gets when asked for
// one that carries maxWrite.
func relayBuffer(maxWrite int) (int, error) {
	probeL, probeR, granted, err := seqpacketPair(4 * maxWrite)
	if err != nil {
		return 0, err
	}
	probeL.Close()
	probeR.Close()
	return granted, nil
}

func (s *Supervisor) setMaxWrite(n int) {
	s.maxWrite = n
	s.bufSize = s.maxWrite + 4096
	s.bufs.New = func() any { b := make([]byte, s.bufSize); return &b }
}

// startReaders starts the goroutines that read /dev/fuse.
func (s *Supervisor) startReaders() {
	for range s.cfg.Readers {
		s.readers.Add(1)
		go s.readKernel()
	}
}

// Mountpoint is the absolute mount point.
func (s *Supervisor) Mountpoint() string { return s.cfg.Mountpoint }

// MaxWrite is the request size in use.
func (s *Supervisor) MaxWrite() int { return s.maxWrite }

// WorkerVersion is the version the current worker reported.
func (s *Supervisor) WorkerVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.version
}

// WorkerPID is the process id of the current worker (0 while none runs).
func (s *Supervisor) WorkerPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.active == nil {
		return 0
	}
	return s.mu.active.cmd.Process.Pid
}

// Generation counts the workers started so far.
func (s *Supervisor) Generation() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.gen
}

// Done is closed when the supervisor stopped (Shutdown, unmount, or a
// crash loop); Err tells which.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

// Err is nil after Shutdown or an unmount, an error after a crash loop.
// Valid once Done is closed.
func (s *Supervisor) Err() error {
	<-s.done
	return s.err
}

// Upgrade replaces the worker by one started with cmd (another binary,
// say) without unmounting: new requests wait, the old worker finishes
// its requests, flushes and exits, the new one takes over its handles.
// It returns the new worker's version. If the new worker does not start,
// a worker with the previous command takes over and Upgrade fails.
func (s *Supervisor) Upgrade(ctx context.Context, cmd Command) (string, error) {
	r := upgradeReq{cmd: cmd, reply: make(chan upgradeResult, 1)}
	select {
	case s.upgrades <- r:
	case <-s.done:
		return "", errors.New("supervisor: stopped")
	case <-ctx.Done():
		return "", ctx.Err()
	}
	res := <-r.reply
	return res.version, res.err
}

// Shutdown asks the worker to flush, unmounts (lazily when the mount is
// busy), waits until the kernel lets go of the connection (or ctx ends:
// then the connection is aborted), stops the worker and returns. The error
// tells what could not be flushed or unmounted.
func (s *Supervisor) Shutdown(ctx context.Context) error {
	r := shutdownReq{ctx: ctx, reply: make(chan error, 1)}
	select {
	case s.shutdowns <- r:
		err := <-r.reply
		<-s.done
		return err
	case <-s.done:
		return s.err
	}
}

// run serialises the lifecycle: restarts, upgrades, shutdown.
func (s *Supervisor) run() {
	defer func() {
		// The hand-off socket is gone (or the successor's) by the time
		// Done is closed.
		s.closeHandOff()
		s.cfg.Worker.unpin()
		close(s.done)
	}()
	for {
		select {
		case w := <-s.died:
			if w != s.current {
				continue // replaced on purpose
			}
			s.log.Error("supervisor: worker died; starting a new one (the mount stalls meanwhile)", "pid", w.cmd.Process.Pid, "state", w.cmd.ProcessState.String())
			if err := s.replace(w, s.cfg.Worker); err != nil {
				s.err = err
				s.abort()
				return
			}
		case r := <-s.upgrades:
			v, err := s.upgrade(r.cmd)
			if err != nil && s.current == nil {
				s.err = err
				r.reply <- upgradeResult{err: err}
				s.abort()
				return
			}
			r.reply <- upgradeResult{version: v, err: err}
		case r := <-s.shutdowns:
			r.reply <- s.shutdown(r.ctx)
			return
		case c := <-s.handoffs:
			handed, err := s.handOff(c)
			if handed {
				return
			}
			if err != nil && s.current == nil {
				s.err = err
				s.abort()
				return
			}
		case <-s.unmounted:
			s.log.Info("supervisor: unmounted; stopping the worker")
			s.pause()
			s.stopWorker(s.current, 30*time.Second)
			s.closeDev()
			return
		}
	}
}

// abort gives up the mount after a crash loop: applications get ENOTCONN
// instead of hanging.
func (s *Supervisor) abort() {
	s.log.Error("supervisor: giving up the mount", "err", s.err)
	if s.current != nil {
		s.current.kill()
	}
	if err := unix.Unmount(s.cfg.Mountpoint, unix.MNT_DETACH); err != nil {
		s.log.Error("supervisor: detach mount", "err", err)
	}
	s.closeDev()
}

func (s *Supervisor) closeDev() {
	s.dev.close()
	s.readers.Wait()
	s.mu.Lock()
	for u, p := range s.mu.pending {
		s.putBuf(p)
		delete(s.mu.pending, u)
	}
	s.mu.Unlock()
}

// pause stops dispatching: new requests queue in the supervisor.
func (s *Supervisor) pause() {
	s.mu.Lock()
	s.mu.active = nil
	s.mu.Unlock()
}

// upgrade: pause, drain and stop the current worker, start one with cmd.
func (s *Supervisor) upgrade(cmd Command) (string, error) {
	old := s.current
	s.pause()
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	for s.inflight(old.gen) > 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if n := s.inflight(old.gen); n > 0 {
		s.log.Warn("supervisor: requests still running in the old worker; they go to the new one", "requests", n)
	}
	s.stopWorker(old, 30*time.Second)
	cmd, err := cmd.pin()
	var w *worker
	if err == nil {
		if w, err = s.startResume(cmd); err != nil {
			cmd.unpin()
			err = fmt.Errorf("supervisor: upgrade to %s: %w", cmd.Path, err)
		}
	}
	if err != nil {
		s.log.Error("supervisor: upgrade failed; going back to the previous worker binary", "path", cmd.Path, "err", err)
		if err2 := s.replaceStarting(s.cfg.Worker); err2 != nil {
			s.current = nil
			return "", errors.Join(err, err2)
		}
		return "", err
	}
	s.cfg.Worker.unpin()
	s.cfg.Worker = cmd
	s.current = w
	s.log.Info("supervisor: upgraded", "path", cmd.Path, "version", w.version, "pid", w.cmd.Process.Pid)
	return w.version, nil
}

// stopWorker asks w to flush and exit, then waits (killing it after
// timeout). The journal entries its flush committed are dropped.
func (s *Supervisor) stopWorker(w *worker, timeout time.Duration) {
	if w == nil {
		return
	}
	s.mu.Lock()
	s.mu.seq++
	seq := s.mu.seq
	s.mu.Unlock()
	m, err := w.call(ctrlMsg{Op: msgStop}, msgStopped, timeout)
	switch {
	case err != nil:
		s.log.Error("supervisor: worker did not stop cleanly", "pid", w.cmd.Process.Pid, "err", err)
	case m.Err != "":
		s.log.Error("supervisor: worker could not flush everything", "pid", w.cmd.Process.Pid, "err", m.Err)
	default:
		s.commitAll(seq)
	}
	select {
	case <-w.exited:
	case <-time.After(timeout):
		w.kill()
		<-w.exited
	}
	<-w.readersDone
	w.conn.close()
	w.ctrl.close()
}

// replace starts a worker with cmd after w died, with backoff and the
// crash-loop limit.
func (s *Supervisor) replace(w *worker, cmd Command) error {
	s.pause()
	<-w.exited
	<-w.readersDone // every reply it wrote has been relayed
	w.conn.close()
	w.ctrl.close()
	s.current = nil
	return s.replaceStarting(cmd)
}

func (s *Supervisor) replaceStarting(cmd Command) error {
	backoff := s.cfg.BackoffMin
	for {
		now := time.Now()
		s.mu.Lock()
		var recent []time.Time
		for _, t := range s.mu.restarts {
			if now.Sub(t) < s.cfg.RestartWindow {
				recent = append(recent, t)
			}
		}
		s.mu.restarts = append(recent, now)
		n := len(s.mu.restarts)
		s.mu.Unlock()
		if n > s.cfg.MaxRestarts {
			return fmt.Errorf("supervisor: crash loop: %d worker starts within %v", n, s.cfg.RestartWindow)
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, s.cfg.BackoffMax)
		nw, err := s.startResume(cmd)
		if err == nil {
			s.current = nw
			s.log.Info("supervisor: worker replaced", "pid", nw.cmd.Process.Pid, "version", nw.version, "generation", nw.gen)
			return nil
		}
		s.log.Error("supervisor: worker failed to start", "err", err, "attempt", n)
	}
}

// startResume starts a worker with the recorded INIT and hands it the
// connection's state.
func (s *Supervisor) startResume(cmd Command) (*worker, error) {
	s.mu.Lock()
	for u := range s.mu.synthetic {
		delete(s.mu.synthetic, u)
	}
	for _, j := range s.mu.journal {
		j.syncing = false
	}
	s.mu.Unlock()
	w, _, err := s.start(cmd, false)
	if err != nil {
		return nil, err
	}
	s.resume(w)
	return w, nil
}

// shutdown: flush, unmount, wait for the connection to end, stop.
func (s *Supervisor) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.mu.stopping = true
	s.mu.Unlock()
	var errs []error
	if w := s.current; w != nil {
		m, err := w.call(ctrlMsg{Op: msgFlush}, msgFlushed, time.Until(deadlineOr(ctx, 5*time.Minute)))
		if err == nil && m.Err != "" {
			err = errors.New(m.Err)
		}
		if err != nil {
			s.log.Error("supervisor: flush before unmount failed: written data may be lost", "err", err)
			errs = append(errs, fmt.Errorf("flush: %w", err))
		}
	}
	err := unix.Unmount(s.cfg.Mountpoint, 0)
	if errors.Is(err, unix.EBUSY) {
		s.log.Warn("supervisor: mount busy; detaching it lazily")
		err = unix.Unmount(s.cfg.Mountpoint, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", s.cfg.Mountpoint, err))
	}
	select {
	case <-s.unmounted:
	case <-ctx.Done():
		s.log.Warn("supervisor: the mount is still in use; aborting the connection")
	}
	s.pause()
	s.stopWorker(s.current, 30*time.Second)
	s.closeDev()
	s.log.Info("supervisor: stopped")
	return errors.Join(errs...)
}

func deadlineOr(ctx context.Context, d time.Duration) time.Time {
	if t, ok := ctx.Deadline(); ok {
		return t
	}
	return time.Now().Add(d)
}
