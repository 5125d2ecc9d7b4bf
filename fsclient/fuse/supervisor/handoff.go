package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/fuse"
)

// HandOffVersion is the version of the hand-off state record this build
// writes and reads. A build that changes the record bumps it and keeps
// reading the older versions it can still take over from.
const HandOffVersion = 1

// The hand-off protocol, on a unix stream socket (Config.HandOffSocket of
// the old supervisor), one JSON object per message:
//
//	new -> old  {"op":"adopt","versions":[1],"pid":N}
//	            old quiesces: pauses, drains and stops its worker (which
//	            flushes), stops reading /dev/fuse
//	old -> new  one byte carrying /dev/fuse by SCM_RIGHTS (without it
//	            when refusing), then {"op":"state","state":{...}} or
//	            {"op":"refused","err":"..."}
//	            new starts its worker and replays INIT into it
//	new -> old  {"op":"ready"} or {"op":"failed","err":"..."}
//	old -> new  {"op":"release"}: old is out (closes its copy of the
//	            descriptor, exits without unmounting); new replays the
//	            journal and the queued requests and reads /dev/fuse
//
// Until old sends release, a failure on either side (an error, a closed
// socket, a timeout) leaves the connection with old, which starts a
// worker again and resumes: the application saw a stall. new never
// answers a request before release, so nothing is answered twice.
const (
	hoAdopt   = "adopt"
	hoState   = "state"
	hoRefused = "refused"
	hoReady   = "ready"
	hoFailed  = "failed"
	hoRelease = "release"
)

type handOffMsg struct {
	Op       string `json:"op"`
	Versions []int  `json:"versions,omitempty"`
	PID      int    `json:"pid,omitempty"`
	// Mountpoint the adopter serves: checked before anything stops.
	Mountpoint string        `json:"mountpoint,omitempty"`
	Err        string        `json:"err,omitempty"`
	State      *handOffState `json:"state,omitempty"`
}

// handOffState is everything a supervisor knows about its connection: the
// record a new supervisor resumes from, exactly as after a worker crash.
type handOffState struct {
	Version    int    `json:"version"`
	Mountpoint string `json:"mountpoint"`
	// MaxWrite is the request size the connection negotiated; the new
	// relay must carry it.
	MaxWrite int `json:"max_write"`
	// Init is the kernel's INIT request; InitOut what the first worker
	// answered (after clamping).
	Init    []byte      `json:"init"`
	InitOut handOffInit `json:"init_out"`
	// Generation counts the workers so far (the new one is next).
	Generation int `json:"generation"`
	// Handles are the open file and directory handles; MaxFh the largest
	// handle number ever given out.
	Handles []fuse.Handle `json:"handles"`
	MaxFh   uint64        `json:"max_fh"`
	// Pending are the requests the kernel waits for, with the INTERRUPT
	// sent for each (if any), in dispatch order.
	Pending []handOffRequest `json:"pending"`
	// Journal holds acknowledged writes no flush committed (empty unless
	// the old worker's final flush failed), in acknowledgement order.
	Journal []handOffRequest `json:"journal"`
	// Seq is the last dispatch sequence number used.
	Seq uint64 `json:"seq"`
	// WorkerVersion is the old worker's version, for logs.
	WorkerVersion string `json:"worker_version,omitempty"`
	// KernelChecks: the connection was mounted with
	// default_permissions. Absent from records of builds that mounted
	// without it: their workers then check every request themselves.
	KernelChecks bool `json:"kernel_checks,omitempty"`
}

type handOffInit struct {
	Major    uint32 `json:"major"`
	Minor    uint32 `json:"minor"`
	Flags    uint64 `json:"flags"`
	MaxWrite uint32 `json:"max_write"`
	MaxPages uint16 `json:"max_pages"`
}

type handOffRequest struct {
	Msg       []byte `json:"msg"`
	Interrupt []byte `json:"interrupt,omitempty"`
	Seq       uint64 `json:"seq"`
	Ack       uint64 `json:"ack,omitempty"` // journal: order of the acknowledgement
}

// HandedOff reports whether the supervisor gave its connection to another
// one (and so stopped without unmounting). Valid once Done is closed.
func (s *Supervisor) HandedOff() bool {
	<-s.done
	return s.handedOff
}

// listenHandOff listens on Config.HandOffSocket, replacing a stale socket
// file; check refuses to replace one a live supervisor answers on.
func (s *Supervisor) listenHandOff(check bool) error {
	p := s.cfg.HandOffSocket
	if p == "" {
		return nil
	}
	if check {
		if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("supervisor: another supervisor listens on the hand-off socket %s: adopt its mount (--adopt) or choose another socket", p)
		}
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("supervisor: hand-off socket directory: %w", err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("supervisor: remove the stale hand-off socket %s: %w", p, err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return fmt.Errorf("supervisor: hand-off socket: %w", err)
	}
	// Its successor binds the same path before this one closes.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(p, 0o600); err != nil {
		l.Close()
		return err
	}
	s.handOffL = l
	s.accepts.Add(1)
	go s.acceptHandOffs(l)
	return nil
}

func (s *Supervisor) acceptHandOffs(l *net.UnixListener) {
	defer s.accepts.Done()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return // closed
		}
		select {
		case s.handoffs <- c:
		case <-s.handOffStop:
			c.Close()
			return
		}
	}
}

// closeHandOff stops listening; the socket file is removed unless the
// connection was handed over (the successor listens there now).
func (s *Supervisor) closeHandOff() {
	if s.handOffL == nil {
		return
	}
	close(s.handOffStop)
	s.handOffL.Close()
	s.accepts.Wait()
	if !s.handedOff {
		os.Remove(s.cfg.HandOffSocket)
	}
}

// handOff serves one adopter on c (run's goroutine). It reports whether
// the connection went over; when not, the supervisor serves again with a
// worker of its own (or, if none could start, err says why).
func (s *Supervisor) handOff(c *net.UnixConn) (handed bool, err error) {
	defer c.Close()
	enc, dec := json.NewEncoder(c), json.NewDecoder(c)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var req handOffMsg
	if err := dec.Decode(&req); err != nil || req.Op != hoAdopt {
		if errors.Is(err, io.EOF) {
			// A liveness check (listenHandOff of another Start).
			return false, nil
		}
		s.log.Warn("supervisor: bad hand-off request", "op", req.Op, "err", err)
		return false, nil
	}
	log := s.log.With("adopter_pid", req.PID)
	if !slices.Contains(req.Versions, HandOffVersion) {
		msg := fmt.Sprintf("this supervisor writes hand-off state version %d; the adopter reads %v: upgrade in two steps through a build that reads both", HandOffVersion, req.Versions)
		log.Error("supervisor: refusing a hand-off", "err", msg)
		c.Write([]byte{0})
		enc.Encode(handOffMsg{Op: hoRefused, Err: msg})
		return false, nil
	}
	if req.Mountpoint != "" && filepath.Clean(req.Mountpoint) != s.cfg.Mountpoint {
		msg := fmt.Sprintf("this hand-off socket serves %s, not %s", s.cfg.Mountpoint, req.Mountpoint)
		log.Error("supervisor: refusing a hand-off", "err", msg)
		c.Write([]byte{0})
		enc.Encode(handOffMsg{Op: hoRefused, Err: msg})
		return false, nil
	}
	log.Info("supervisor: handing the connection over; the mount stalls meanwhile")

	// Quiesce: new requests queue, the worker finishes what it has,
	// flushes every file and exits, nobody reads /dev/fuse.
	old := s.current
	s.pause()
	s.drain(old)
	s.stopWorker(old, 30*time.Second)
	s.current = nil
	s.dev.shutdown()
	s.readers.Wait()

	st := s.snapshot(old)
	resume := func(why error) (bool, error) {
		log.Error("supervisor: hand-off failed; serving the mount again", "err", why)
		// First let the adopter see it: it stops the worker it started
		// (which may hold the volume's lock) when the socket closes.
		c.Close()
		s.dev.reset()
		s.startReaders()
		if err := s.replaceStarting(s.cfg.Worker); err != nil {
			return false, errors.Join(why, err)
		}
		return false, nil
	}
	c.SetDeadline(time.Now().Add(s.cfg.StartTimeout + time.Minute))
	if _, _, err := c.WriteMsgUnix([]byte{1}, unix.UnixRights(s.dev.fd), nil); err != nil {
		return resume(fmt.Errorf("send /dev/fuse: %w", err))
	}
	if err := enc.Encode(handOffMsg{Op: hoState, State: st}); err != nil {
		return resume(fmt.Errorf("send state: %w", err))
	}
	var r handOffMsg
	if err := dec.Decode(&r); err != nil {
		return resume(fmt.Errorf("waiting for the adopter's worker: %w", err))
	}
	if r.Op != hoReady {
		return resume(fmt.Errorf("the adopter failed: %s", r.Err))
	}
	if err := enc.Encode(handOffMsg{Op: hoRelease}); err != nil {
		return resume(fmt.Errorf("send release: %w", err))
	}
	// From here on the connection is the adopter's.
	s.handedOff = true
	s.closeDev()
	log.Info("supervisor: connection handed over; exiting without unmounting")
	return true, nil
}

// drain waits (DrainTimeout at most) for the requests old is serving.
func (s *Supervisor) drain(old *worker) {
	if old == nil {
		return
	}
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	for s.inflight(old.gen) > 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if n := s.inflight(old.gen); n > 0 {
		s.log.Warn("supervisor: requests still running in the old worker; they go to the new one", "requests", n)
	}
}

// snapshot records the relay's state; no worker runs and nobody reads
// /dev/fuse.
func (s *Supervisor) snapshot(old *worker) *handOffState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &handOffState{
		Version:      HandOffVersion,
		Mountpoint:   s.cfg.Mountpoint,
		KernelChecks: s.kernelChecks,
		MaxWrite:     s.maxWrite,
		Init:         s.initReq,
		InitOut: handOffInit{
			Major: s.initOut.major, Minor: s.initOut.minor, Flags: s.initOut.flags,
			MaxWrite: s.initOut.maxWrite, MaxPages: s.initOut.maxPages,
		},
		Generation: s.mu.gen,
		MaxFh:      s.mu.maxFh,
		Seq:        s.mu.seq,
		Handles:    []fuse.Handle{},
		Pending:    []handOffRequest{},
		Journal:    []handOffRequest{},
	}
	if old != nil {
		st.WorkerVersion = old.version
	}
	for _, h := range s.mu.handles {
		st.Handles = append(st.Handles, h)
	}
	slices.SortFunc(st.Handles, func(a, b fuse.Handle) int { return cmpU64(a.Fh, b.Fh) })
	for u, p := range s.mu.pending {
		st.Pending = append(st.Pending, handOffRequest{Msg: p.buf, Interrupt: s.mu.interrupts[u], Seq: p.seq})
	}
	slices.SortFunc(st.Pending, func(a, b handOffRequest) int { return cmpU64(a.Seq, b.Seq) })
	for _, j := range s.mu.journal {
		for _, p := range j.writes {
			st.Journal = append(st.Journal, handOffRequest{Msg: p.buf, Seq: p.seq, Ack: p.jseq})
		}
	}
	slices.SortFunc(st.Journal, func(a, b handOffRequest) int { return cmpU64(a.Ack, b.Ack) })
	return st
}

// restore installs a hand-off record into a supervisor that runs no
// worker yet.
func (s *Supervisor) restore(st *handOffState) error {
	if _, ok := parseIn(st.Init); !ok {
		return errors.New("hand-off state: no INIT request")
	}
	s.initReq = st.Init
	s.initOut = initOut{major: st.InitOut.Major, minor: st.InitOut.Minor, flags: st.InitOut.Flags, maxWrite: st.InitOut.MaxWrite, maxPages: st.InitOut.MaxPages}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.gen = st.Generation
	s.mu.maxFh = st.MaxFh
	s.mu.seq = st.Seq
	for _, h := range st.Handles {
		s.mu.handles[h.Fh] = h
	}
	for _, r := range st.Pending {
		h, ok := parseIn(r.Msg)
		if !ok {
			return errors.New("hand-off state: a short pending request")
		}
		s.mu.pending[h.unique] = &pending{buf: r.Msg, op: h.opcode, nodeid: h.nodeid, seq: r.Seq}
		if len(r.Interrupt) > 0 {
			s.mu.interrupts[h.unique] = r.Interrupt
		}
		s.mu.seq = max(s.mu.seq, r.Seq)
	}
	for _, r := range st.Journal {
		h, ok := parseIn(r.Msg)
		if !ok || h.opcode != opWrite {
			return errors.New("hand-off state: a journal entry that is not a WRITE")
		}
		j := s.mu.journal[h.nodeid]
		if j == nil {
			j = &journal{}
			s.mu.journal[h.nodeid] = j
		}
		j.writes = append(j.writes, &pending{buf: r.Msg, op: h.opcode, nodeid: h.nodeid, seq: r.Seq, jseq: r.Ack})
		j.bytes += len(r.Msg)
		j.fh = u64(r.Msg, inHeaderSize)
		s.mu.seq = max(s.mu.seq, r.Seq, r.Ack)
	}
	return nil
}

// Adopt takes over the live FUSE connection of the supervisor listening on
// socket (its Config.HandOffSocket) without unmounting: it receives the
// /dev/fuse descriptor and the relay state, starts its own worker with
// cfg.Worker (INIT and the open handles replayed, as after a worker
// crash), and resumes; the old supervisor then exits. cfg.Mountpoint must
// be the mount's. On success the mount is served by the returned
// Supervisor, which listens on cfg.HandOffSocket for its own successor.
// On failure the old supervisor keeps the mount.
func Adopt(ctx context.Context, cfg Config, socket string) (*Supervisor, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := newSupervisor(cfg)
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("supervisor: adopt: connect to the hand-off socket %s: %w (is a supervised mount with that --handoff-socket running?)", socket, err)
	}
	c := nc.(*net.UnixConn)
	defer c.Close()
	deadline := time.Now().Add(cfg.DrainTimeout + cfg.StartTimeout + time.Minute)
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl
	}
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	enc := json.NewEncoder(c)
	if err := enc.Encode(handOffMsg{Op: hoAdopt, Versions: []int{HandOffVersion}, PID: os.Getpid(), Mountpoint: s.cfg.Mountpoint}); err != nil {
		return nil, fmt.Errorf("supervisor: adopt: %w", err)
	}
	fd, err := recvFD(c)
	if err != nil {
		return nil, fmt.Errorf("supervisor: adopt: receive /dev/fuse: %w", err)
	}
	dec := json.NewDecoder(c)
	var m handOffMsg
	if err := dec.Decode(&m); err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("supervisor: adopt: read the state: %w", err)
	}
	if m.Op != hoState || m.State == nil || fd < 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("supervisor: adopt: the old supervisor refused: %s (it keeps the mount)", m.Err)
	}
	dev, err := newRawFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	s.dev = dev
	refuse := func(err error) (*Supervisor, error) {
		enc.Encode(handOffMsg{Op: hoFailed, Err: err.Error()})
		// Our copy only: the old supervisor keeps the connection.
		dev.close()
		return nil, fmt.Errorf("supervisor: adopt %s: %w (the old supervisor keeps the mount)", socket, err)
	}
	st := m.State
	if st.Version != HandOffVersion {
		return refuse(fmt.Errorf("hand-off state version %d; this build reads %d", st.Version, HandOffVersion))
	}
	if filepath.Clean(st.Mountpoint) != s.cfg.Mountpoint {
		return refuse(fmt.Errorf("the hand-off socket serves %s, not %s", st.Mountpoint, s.cfg.Mountpoint))
	}
	s.cfg.Mountpoint = st.Mountpoint
	s.log = cfg.Logger.With("mountpoint", st.Mountpoint)
	granted, err := relayBuffer(st.MaxWrite)
	if err != nil {
		return refuse(err)
	}
	if limit := (granted - 32 - 4096) &^ (os.Getpagesize() - 1); limit < st.MaxWrite {
		return refuse(fmt.Errorf("the relay socket carries %d bytes, the connection uses max_write %d: raise net.core.wmem_max or grant CAP_NET_ADMIN", limit, st.MaxWrite))
	}
	s.setMaxWrite(st.MaxWrite)
	s.kernelChecks = st.KernelChecks
	if err := s.restore(st); err != nil {
		return refuse(err)
	}
	w, _, err := s.start(cfg.Worker, false)
	if err != nil {
		return refuse(err)
	}
	abandon := func(err error) (*Supervisor, error) {
		close(w.abandon)
		w.kill()
		<-w.exited
		<-w.readersDone
		w.conn.close()
		w.ctrl.close()
		dev.close()
		return nil, fmt.Errorf("supervisor: adopt %s: %w", socket, err)
	}
	if err := enc.Encode(handOffMsg{Op: hoReady}); err != nil {
		return abandon(err)
	}
	var rel handOffMsg
	if err := dec.Decode(&rel); err != nil || rel.Op != hoRelease {
		return abandon(fmt.Errorf("no release from the old supervisor (%v %s): it keeps the mount", err, rel.Op))
	}
	// The connection is ours.
	s.current = w
	s.resume(w)
	if err := s.listenHandOff(false); err != nil {
		s.log.Error("supervisor: no hand-off socket; this mount cannot be adopted again", "err", err)
	}
	s.startReaders()
	go s.run()
	s.log.Info("supervisor: adopted the mount", "from_version", st.WorkerVersion, "worker_pid", w.cmd.Process.Pid, "version", w.version,
		"handles", len(st.Handles), "requests", len(st.Pending), "journal", len(st.Journal))
	return s, nil
}

// recvFD reads the one byte that carries the descriptor; -1 when it came
// without one (a refusal).
func recvFD(c *net.UnixConn) (int, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return -1, err
	}
	if n != 1 {
		return -1, errors.New("the old supervisor closed the connection")
	}
	fds, err := unixRights(oob[:oobn])
	if err != nil {
		return -1, err
	}
	if len(fds) == 0 {
		return -1, nil
	}
	for _, f := range fds[1:] {
		unix.Close(f)
	}
	return fds[0], nil
}

// OpenHandles counts the file and directory handles open on the mount.
func (s *Supervisor) OpenHandles() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.handles)
}
