package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse"
)

// worker is one worker process and its relay socket.
type worker struct {
	gen         int
	cmd         *exec.Cmd
	conn        *rawFD // our end of the relay socket
	ctrl        *ctrlConn
	ctrlMu      sync.Mutex
	version     string
	exited      chan struct{} // closed when the process was reaped
	abandon     chan struct{} // closed when start gives up on it
	readersDone chan struct{} // closed when every reply was relayed
}

func (w *worker) kill() {
	if w.cmd.Process != nil {
		w.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// call sends m on the control socket and waits for a reply with op want.
func (w *worker) call(m ctrlMsg, want string, timeout time.Duration) (ctrlMsg, error) {
	w.ctrlMu.Lock()
	defer w.ctrlMu.Unlock()
	if err := w.ctrl.send(m); err != nil {
		return ctrlMsg{}, err
	}
	r, files, err := w.ctrl.recv(time.Now().Add(timeout))
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return ctrlMsg{}, err
	}
	if r.Op != want {
		return ctrlMsg{}, fmt.Errorf("worker answered %q to %q", r.Op, m.Op)
	}
	return r, nil
}

// start execs a worker, hands it the relay socket and the open handles,
// replays INIT and waits until it is ready. For the first worker it
// returns INIT's reply (to give the kernel); later workers' replies are
// checked against the first and dropped.
func (s *Supervisor) start(cmd Command, first bool) (*worker, []byte, error) {
	lf, remote, _, err := seqpacketPair(4 * s.maxWrite)
	if err != nil {
		return nil, nil, err
	}
	local, err := socketFD(lf)
	if err != nil {
		remote.Close()
		return nil, nil, err
	}
	cl, cr, _, err := seqpacketPair(4 << 20)
	if err != nil {
		local.close()
		remote.Close()
		return nil, nil, err
	}
	ctrl, err := newCtrlConn(cl)
	if err != nil {
		local.close()
		remote.Close()
		cr.Close()
		return nil, nil, err
	}
	path, arg0 := cmd.argv0()
	c := exec.Command(path, cmd.Args...)
	c.Args[0] = arg0
	c.Env = cmd.Env
	c.Stdout, c.Stderr = cmd.Stdout, cmd.Stderr
	if c.Stdout == nil {
		c.Stdout = os.Stderr
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	c.ExtraFiles = []*os.File{cr}
	s.mu.Lock()
	s.mu.gen++
	w := &worker{gen: s.mu.gen, cmd: c, conn: local, ctrl: ctrl, exited: make(chan struct{}), abandon: make(chan struct{}), readersDone: make(chan struct{})}
	hello := ctrlMsg{Op: msgHello, Generation: w.gen, Mountpoint: s.cfg.Mountpoint, MaxWrite: s.maxWrite, NextFh: s.mu.maxFh + 1, KernelChecks: s.kernelChecks}
	for _, h := range s.mu.handles {
		hello.Handles = append(hello.Handles, h)
	}
	s.mu.Unlock()
	slices.SortFunc(hello.Handles, func(a, b fuse.Handle) int { return int(a.Fh - b.Fh) })

	err = c.Start()
	cr.Close()
	if err != nil {
		local.close()
		remote.Close()
		ctrl.close()
		return nil, nil, fmt.Errorf("start worker %s: %w", cmd.Path, err)
	}
	if err := setOOMScoreAdj(c.Process.Pid, s.cfg.WorkerOOMScoreAdj); err != nil {
		s.log.Debug("supervisor: cannot set the worker's oom_score_adj", "err", err)
	}
	go func() {
		c.Wait()
		close(w.exited)
		select {
		case s.died <- w:
		case <-s.done:
		case <-w.abandon:
		}
	}()
	fail := func(err error) (*worker, []byte, error) {
		close(w.abandon)
		w.kill()
		<-w.exited
		local.close()
		ctrl.close()
		return nil, nil, fmt.Errorf("worker %s (pid %d): %w", cmd.Path, c.Process.Pid, err)
	}
	err = ctrl.send(hello, remote)
	remote.Close()
	if err != nil {
		return fail(err)
	}
	deadline := time.Now().Add(s.cfg.StartTimeout)
	if err := local.write(s.initReq); err != nil {
		return fail(fmt.Errorf("send INIT: %w", err))
	}
	buf := make([]byte, 4096)
	n, err := local.read(buf, deadline)
	if err == nil && n == 0 {
		err = errors.New("exited before answering INIT")
	}
	if err != nil {
		return fail(fmt.Errorf("read INIT reply: %w", err))
	}
	reply := buf[:n]
	oh, ok := parseOut(reply)
	if !ok || oh.errno != 0 {
		return fail(fmt.Errorf("INIT failed (errno %d)", -oh.errno))
	}
	out, ok := parseInitOut(reply)
	if !ok {
		return fail(errors.New("short INIT reply"))
	}
	if first {
		clampInitOut(reply, uint32(s.maxWrite), os.Getpagesize())
		s.initOut, _ = parseInitOut(reply)
	} else if err := compatible(s.initOut, out); err != nil {
		return fail(err)
	}
	m, files, err := ctrl.recv(deadline)
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return fail(fmt.Errorf("waiting for ready: %w", err))
	}
	if m.Op != msgReady {
		return fail(fmt.Errorf("expected ready, got %q", m.Op))
	}
	if m.Lost > 0 {
		s.log.Error("supervisor: the new worker could not open some handles again; their users get EBADF", "handles", m.Lost)
	}
	w.version = m.Version
	s.mu.Lock()
	s.mu.version = m.Version
	s.mu.Unlock()
	var wg sync.WaitGroup
	for range s.cfg.Readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.readWorker(w)
		}()
	}
	go func() {
		wg.Wait()
		close(w.readersDone)
	}()
	return w, slices.Clone(reply), nil
}

// compatible checks that a replacement worker negotiated what the kernel
// already uses.
func compatible(was, now initOut) error {
	switch {
	case now.major != was.major || now.minor != was.minor:
		return fmt.Errorf("FUSE protocol %d.%d, the connection uses %d.%d", now.major, now.minor, was.major, was.minor)
	case now.flags != was.flags:
		return fmt.Errorf("FUSE capabilities %#x, the connection uses %#x (a different go-fuse or options: remount to change them)", now.flags, was.flags)
	case now.maxWrite < was.maxWrite:
		return fmt.Errorf("max_write %d below the connection's %d", now.maxWrite, was.maxWrite)
	}
	return nil
}

// resume replays into w the acknowledged but uncommitted writes and the
// requests no live worker has, then makes w active.
func (s *Supervisor) resume(w *worker) {
	var send [][]byte
	s.mu.Lock()
	var writes []*pending
	for _, j := range s.mu.journal {
		writes = append(writes, j.writes...)
	}
	slices.SortFunc(writes, func(a, b *pending) int { return cmpU64(a.seq, b.seq) })
	for _, p := range writes {
		s.mu.synth++
		u := syntheticUnique | s.mu.synth
		setUnique(p.buf, u)
		s.mu.synthetic[u] = synthReq{ino: p.nodeid, seq: p.seq}
		send = append(send, p.buf)
	}
	if len(writes) > 0 {
		s.log.Warn("supervisor: replaying acknowledged writes the dead worker had not committed", "writes", len(writes))
	}
	s.mu.Unlock()
	n := 0
	for {
		s.mu.Lock()
		var ps []uint64
		for u, p := range s.mu.pending {
			if p.gen != w.gen {
				ps = append(ps, u)
			}
		}
		if len(ps) == 0 && len(send) == 0 {
			s.mu.active = w
			s.mu.Unlock()
			break
		}
		slices.Sort(ps)
		for _, u := range ps {
			p := s.mu.pending[u]
			p.gen = w.gen
			send = append(send, p.buf)
			if in, ok := s.mu.interrupts[u]; ok {
				send = append(send, in)
			}
		}
		n += len(ps)
		s.mu.Unlock()
		for _, b := range send {
			if err := w.conn.write(b); err != nil {
				s.log.Error("supervisor: re-send to the new worker failed", "err", err)
				break // it died; the next replacement re-sends
			}
		}
		send = send[:0]
	}
	if n > 0 {
		s.log.Warn("supervisor: re-sent requests the old worker had not answered", "requests", n)
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// inflight counts the requests sent to worker gen and not answered.
func (s *Supervisor) inflight(gen int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.mu.pending {
		if p.gen == gen {
			n++
		}
	}
	return n
}

func (s *Supervisor) getBuf() *[]byte { return s.bufs.Get().(*[]byte) }
func (s *Supervisor) putBuf(p *pending) {
	if p.pooled != nil {
		s.bufs.Put(p.pooled)
		p.pooled = nil
	}
	p.buf = nil
}

// readKernel relays requests from /dev/fuse to the active worker,
// recording each until it is answered.
func (s *Supervisor) readKernel() {
	defer s.readers.Done()
	for {
		bp := s.getBuf()
		n, err := s.dev.read(*bp, time.Time{})
		if err != nil {
			s.bufs.Put(bp)
			switch {
			case errors.Is(err, syscall.ENOENT):
				continue // the request was interrupted before we read it
			case errors.Is(err, syscall.ENODEV):
				s.unmountOne.Do(func() { close(s.unmounted) })
			case errors.Is(err, errShutdown):
			default:
				s.log.Error("supervisor: read /dev/fuse", "err", err)
				s.unmountOne.Do(func() { close(s.unmounted) })
			}
			return
		}
		msg := (*bp)[:n]
		h, ok := parseIn(msg)
		if !ok {
			s.bufs.Put(bp)
			continue
		}
		switch h.opcode {
		case opForget, opBatchForget, opNotifyReply:
			// No reply; lost with a dead worker, which is harmless:
			// skiff keeps no state per kernel lookup.
			s.mu.Lock()
			w := s.mu.active
			s.mu.Unlock()
			if w != nil {
				w.conn.write(msg)
			}
			s.bufs.Put(bp)
			continue
		case opInterrupt:
			target := u64(msg, inHeaderSize)
			s.mu.Lock()
			w := s.mu.active
			if _, ok := s.mu.pending[target]; ok {
				s.mu.interrupts[target] = slices.Clone(msg)
			}
			s.mu.Unlock()
			if w != nil {
				w.conn.write(msg)
			}
			s.bufs.Put(bp)
			continue
		}
		p := &pending{op: h.opcode, nodeid: h.nodeid}
		if h.opcode == opWrite {
			p.buf, p.pooled = msg, bp // kept for the journal
		} else {
			p.buf = slices.Clone(msg)
			s.bufs.Put(bp)
		}
		s.mu.Lock()
		s.mu.seq++
		p.seq = s.mu.seq
		s.mu.pending[h.unique] = p
		w := s.mu.active
		if w != nil {
			p.gen = w.gen
		}
		req := p.buf // p belongs to s.mu from here on
		s.mu.Unlock()
		if w == nil {
			continue // queued until a worker resumes
		}
		if err := w.conn.write(req); err != nil {
			if errors.Is(err, syscall.EMSGSIZE) {
				s.log.Error("supervisor: request too large for the relay socket", "opcode", h.opcode, "bytes", len(p.buf))
				s.answer(h.unique, syscall.EIO)
			}
			// Otherwise the worker died: the request is re-sent to
			// the next one.
		}
	}
}

// answer replies errno to request u itself.
func (s *Supervisor) answer(u uint64, errno syscall.Errno) {
	s.mu.Lock()
	if p := s.mu.pending[u]; p != nil {
		delete(s.mu.pending, u)
		s.putBuf(p)
	}
	s.mu.Unlock()
	b := make([]byte, outHeaderSize)
	le.PutUint32(b[0:], outHeaderSize)
	le.PutUint32(b[4:], uint32(-int32(errno)))
	le.PutUint64(b[8:], u)
	s.dev.write(b)
}

// readWorker relays w's replies and notifications to the kernel until w
// closes its end.
func (s *Supervisor) readWorker(w *worker) {
	buf := make([]byte, s.bufSize)
	for {
		n, err := w.conn.read(buf, time.Time{})
		if err != nil || n == 0 {
			return
		}
		msg := buf[:n]
		oh, ok := parseOut(msg)
		if !ok {
			continue
		}
		switch {
		case oh.unique == 0:
			// A notification (invalidation, ...): the kernel's.
		case oh.unique&syntheticUnique != 0:
			s.syntheticReply(w, oh)
			continue
		default:
			s.replied(w, oh, msg)
		}
		if err := s.dev.write(msg); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, errShutdown) && !errors.Is(err, syscall.ENODEV) {
			s.log.Debug("supervisor: write reply to /dev/fuse", "err", err, "unique", oh.unique)
		}
	}
}

// replied updates the relay's state for the worker's reply to a kernel
// request: handles opened and released, writes journaled and committed.
func (s *Supervisor) replied(w *worker, oh outHeader, reply []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := oh.unique
	p := s.mu.pending[u]
	if p == nil {
		return // an INTERRUPT's EAGAIN, or a second answer after a re-send
	}
	delete(s.mu.pending, u)
	delete(s.mu.interrupts, u)
	ok := oh.errno == 0
	keep := false
	switch p.op {
	case opOpen, opOpendir:
		if ok {
			s.addHandle(fuse.Handle{Fh: u64(reply, outHeaderSize), Ino: p.nodeid, Flags: u32(p.buf, inHeaderSize), Dir: p.op == opOpendir})
		}
	case opCreate, opTmpfile:
		if ok {
			s.addHandle(fuse.Handle{Fh: u64(reply, outHeaderSize+entryOutSize), Ino: u64(reply, outHeaderSize), Flags: u32(p.buf, inHeaderSize)})
		}
	case opRelease, opReleasedir:
		fh := u64(p.buf, inHeaderSize)
		delete(s.mu.handles, fh)
		if j := s.mu.journal[p.nodeid]; j != nil && p.op == opRelease {
			j.filter(s, func(q *pending) bool { return u64(q.buf, inHeaderSize) != fh })
		}
	case opWrite:
		if ok {
			keep = true
			s.journalWrite(w, p)
		}
	case opRead, opFlush, opFsync, opFallocate:
		if ok {
			s.commit(p.nodeid, p.seq)
		}
	case opSetattr:
		if ok && u32(p.buf, inHeaderSize)&fattrSize != 0 {
			s.commit(p.nodeid, p.seq)
		}
	}
	if !keep {
		s.putBuf(p)
	}
}

func (s *Supervisor) addHandle(h fuse.Handle) {
	if h.Fh == fuse.PollHackFh {
		return // go-fuse's own; no worker needs it again
	}
	s.mu.handles[h.Fh] = h
	s.mu.maxFh = max(s.mu.maxFh, h.Fh)
}

// journalWrite keeps an acknowledged write until a flush commits it; past
// JournalSync bytes it asks w to fsync the inode. s.mu is held.
func (s *Supervisor) journalWrite(w *worker, p *pending) {
	j := s.mu.journal[p.nodeid]
	if j == nil {
		j = &journal{}
		s.mu.journal[p.nodeid] = j
	}
	s.mu.seq++
	p.jseq = s.mu.seq
	j.writes = append(j.writes, p)
	j.bytes += len(p.buf)
	j.fh = u64(p.buf, inHeaderSize)
	if j.bytes < s.cfg.JournalSync || j.syncing || s.mu.active != w {
		return
	}
	j.syncing = true
	s.mu.synth++
	u := syntheticUnique | s.mu.synth
	s.mu.seq++
	s.mu.synthetic[u] = synthReq{ino: p.nodeid, seq: s.mu.seq, fsync: true}
	req := fsyncRequest(u, p.nodeid, j.fh)
	go w.conn.write(req) // not under s.mu, and not blocking this reader
}

// commit drops the journal entries of ino acknowledged before seq (a
// flush dispatched at seq covered them). s.mu is held.
func (s *Supervisor) commit(ino, seq uint64) {
	if j := s.mu.journal[ino]; j != nil {
		j.filter(s, func(q *pending) bool { return q.jseq > seq })
		if len(j.writes) == 0 {
			delete(s.mu.journal, ino)
		}
	}
}

// commitAll drops every journal entry acknowledged before seq.
func (s *Supervisor) commitAll(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ino := range s.mu.journal {
		s.commit(ino, seq)
	}
}

// filter keeps the writes for which keep is true.
func (j *journal) filter(s *Supervisor, keep func(*pending) bool) {
	out := j.writes[:0]
	for _, q := range j.writes {
		if keep(q) {
			out = append(out, q)
			continue
		}
		j.bytes -= len(q.buf)
		s.putBuf(q)
	}
	clear(j.writes[len(out):])
	j.writes = out
}

// syntheticReply handles the answer to a request the supervisor made.
func (s *Supervisor) syntheticReply(w *worker, oh outHeader) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.mu.synthetic[oh.unique]
	if !ok {
		return
	}
	delete(s.mu.synthetic, oh.unique)
	if r.fsync {
		if j := s.mu.journal[r.ino]; j != nil {
			j.syncing = false
		}
		if oh.errno == 0 {
			s.commit(r.ino, r.seq)
		} else {
			s.log.Warn("supervisor: fsync to bound the write journal failed", "ino", r.ino, "errno", -oh.errno)
		}
		return
	}
	if oh.errno != 0 {
		s.log.Error("supervisor: replaying an acknowledged write failed: data lost", "ino", r.ino, "errno", -oh.errno)
	}
}
