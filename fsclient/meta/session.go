package meta

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

var errNoSession = errors.New("meta: opening files needs a session: call NewSession first")

// SessionInfo describes a client.
type SessionInfo struct {
	Version    string `json:"version"`
	Hostname   string `json:"hostname"`
	MountPoint string `json:"mountPoint"`
	PID        int    `json:"pid"`
}

// Session is a registered client.
type Session struct {
	ID        uint64
	Info      SessionInfo
	Heartbeat time.Time
}

func (m *Meta) sessionID() uint64 {
	m.sess.Lock()
	defer m.sess.Unlock()
	return m.sess.id
}

// NewSession registers this client and starts its background jobs:
// heartbeat, cleanup of stale sessions, deletion of removed files' data and
// delayed freeing of slices. Close stops them and ends the session.
func (m *Meta) NewSession(ctx context.Context, info SessionInfo) error {
	if m.format() == nil {
		if _, err := m.Load(ctx); err != nil {
			return err
		}
	}
	m.sess.Lock()
	defer m.sess.Unlock()
	if m.sess.id != 0 || m.sess.cancel != nil {
		return errors.New("meta: session already started")
	}
	if !m.opts.ReadOnly {
		n, err := m.engine.Incr(ctx, keyNextSession, 1)
		if err != nil {
			return fmt.Errorf("meta: allocate session id: %w", err)
		}
		sid := uint64(n)
		infoJSON, err := json.Marshal(info)
		if err != nil {
			return fmt.Errorf("meta: encode session info: %w", err)
		}
		now, err := m.engine.Now(ctx)
		if err != nil {
			return fmt.Errorf("meta: register session: %w", err)
		}
		err = m.update(ctx, func(t *txn) error {
			f := strconv.FormatUint(sid, 10)
			t.tx.HSet(keySessions, f, heartbeatValue(now))
			t.tx.HSet(keySessInfo, f, infoJSON)
			return nil
		})
		if err != nil {
			return fmt.Errorf("meta: register session: %w", err)
		}
		m.sess.id = sid
		m.health.beat(true)
	}
	m.sess.info = info
	jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.sess.cancel = cancel
	if !m.opts.ReadOnly {
		m.sess.wg.Add(2)
		go m.heartbeatLoop(jctx)
		go m.jobLoop(jctx)
	}
	return nil
}

func heartbeatValue(t time.Time) []byte {
	return []byte(strconv.FormatInt(t.UnixMilli(), 10))
}

// Sessions lists the registered sessions.
func (m *Meta) Sessions(ctx context.Context) ([]Session, error) {
	var hb, info map[string][]byte
	err := m.view(ctx, func(t *txn) error {
		var err error
		if hb, err = t.tx.HGetAll(keySessions); err != nil {
			return err
		}
		info, err = t.tx.HGetAll(keySessInfo)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("meta: list sessions: %w", err)
	}
	out := make([]Session, 0, len(hb))
	for f, v := range hb {
		sid, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			continue
		}
		ms, _ := strconv.ParseInt(string(v), 10, 64)
		s := Session{ID: sid, Heartbeat: time.UnixMilli(ms)}
		if b := info[f]; b != nil {
			_ = json.Unmarshal(b, &s.Info)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Close ends the session: it stops the background jobs, releases this
// client's open-file records (open files that were unlinked are then
// deleted) and removes the session. An engine opened by Open is closed.
func (m *Meta) Close(ctx context.Context) error {
	m.sess.Lock()
	cancel, sid := m.sess.cancel, m.sess.id
	m.sess.cancel = nil
	m.sess.Unlock()
	if cancel != nil {
		cancel()
		m.sess.wg.Wait()
	}
	var err error
	if sid != 0 {
		err = m.cleanSession(ctx, sid)
		m.sess.Lock()
		m.sess.id = 0
		m.sess.Unlock()
	}
	m.open.Lock()
	clear(m.open.files)
	m.open.Unlock()
	if m.ownEngine && !m.closed.Swap(true) {
		err = errors.Join(err, m.engine.Close())
	}
	return err
}

func (m *Meta) heartbeatLoop(ctx context.Context) {
	defer m.sess.wg.Done()
	tk := time.NewTicker(m.opts.Heartbeat)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		sid := m.sessionID()
		f := strconv.FormatUint(sid, 10)
		var lost bool
		// The heartbeat is the server's time, so every client measures
		// staleness on one clock.
		now, err := m.engine.Now(ctx)
		floor := m.floorSnapshot()
		if err == nil {
			err = m.update(ctx, func(t *txn) error {
				old, err := t.tx.HGet(keySessions, f)
				if err != nil {
					return err
				}
				lost = old == nil
				t.tx.HSet(keySessions, f, heartbeatValue(now))
				if lost {
					b, _ := json.Marshal(m.sess.info)
					t.tx.HSet(keySessInfo, f, b)
				}
				t.publishFloor(sid, floor)
				return nil
			})
		}
		m.health.beat(err == nil)
		switch {
		case err != nil && ctx.Err() == nil:
			m.log.Warn("meta: session heartbeat failed", "session", sid, "err", err)
		case lost:
			m.log.Error("meta: session was cleaned up as stale by another client (heartbeats stopped for too long); files it had open may have been deleted", "session", sid)
		}
	}
}

// heartbeatHealth records since when this client's heartbeats have
// succeeded without a break (local monotonic time; zero: the last one
// failed) and when the last one succeeded.
type heartbeatHealth struct {
	mu          sync.Mutex
	since, last time.Time
}

func (h *heartbeatHealth) beat(ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !ok {
		h.since = time.Time{}
		return
	}
	now := time.Now()
	if h.since.IsZero() {
		h.since = now
	}
	h.last = now
}

// trusted reports whether heartbeats have succeeded, unbroken, for at
// least timeout, the last one within two heartbeat intervals.
func (h *heartbeatHealth) trusted(timeout, heartbeat time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.since.IsZero() && time.Since(h.since) >= timeout && time.Since(h.last) <= 2*heartbeat
}

func (m *Meta) wakeJobs() {
	select {
	case m.sess.wake <- struct{}{}:
	default:
	}
}

func (m *Meta) jobLoop(ctx context.Context) {
	defer m.sess.wg.Done()
	tk := time.NewTicker(m.opts.JobInterval)
	defer tk.Stop()
	for {
		m.runJobs(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		case <-m.sess.wake:
		}
	}
}

// runJobs runs every background job once.
func (m *Meta) runJobs(ctx context.Context) {
	for _, job := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"clean stale sessions", m.cleanStaleSessions},
		{"delete removed files", m.deleteFiles},
		{"free slices", m.freeSlices},
	} {
		if ctx.Err() != nil {
			return
		}
		if err := job.fn(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("meta: background job failed", "job", job.name, "err", err)
		}
	}
}

func (m *Meta) cleanStaleSessions(ctx context.Context) error {
	ss, err := m.Sessions(ctx)
	if err != nil {
		return err
	}
	// Only a client that has itself reached the engine without a break for
	// a whole timeout may judge others: after an outage every session's
	// heartbeat is old, and the others need a timeout to reconnect too.
	if !m.health.trusted(m.opts.SessionTimeout, m.opts.Heartbeat) {
		return nil
	}
	now, err := m.engine.Now(ctx)
	if err != nil {
		return err
	}
	own := m.sessionID()
	for _, s := range ss {
		if s.ID == own || now.Sub(s.Heartbeat) < m.opts.SessionTimeout {
			continue
		}
		m.log.Info("meta: cleaning up stale session", "session", s.ID, "host", s.Info.Hostname, "mountpoint", s.Info.MountPoint, "lastHeartbeat", s.Heartbeat)
		if err := m.cleanSession(ctx, s.ID); err != nil {
			return err
		}
	}
	return nil
}

// cleanSession releases every open-file record of session sid, deleting
// inodes that were unlinked and are no longer open anywhere, and its file
// locks, and then removes the session. Running it twice or concurrently is
// harmless.
func (m *Meta) cleanSession(ctx context.Context, sid uint64) error {
	var open map[string][]byte
	err := m.view(ctx, func(t *txn) error {
		var err error
		open, err = t.tx.HGetAll(sessOpenKey(sid))
		return err
	})
	if err != nil {
		return fmt.Errorf("meta: read open files of session %d: %w", sid, err)
	}
	for f := range open {
		ino, err := strconv.ParseUint(f, 10, 64)
		if err != nil || ino == 0 {
			continue
		}
		if err := m.update(ctx, func(t *txn) error {
			return t.unrecordOpen(sid, Ino(ino))
		}); err != nil {
			return fmt.Errorf("meta: release inode %d of session %d: %w", ino, sid, err)
		}
	}
	if err := m.releaseSessionLocks(ctx, sid); err != nil {
		return err
	}
	err = m.update(ctx, func(t *txn) error {
		f := strconv.FormatUint(sid, 10)
		t.tx.HDel(keySessions, f)
		t.tx.HDel(keySessInfo, f)
		t.tx.HDel(keySessSlice, f)
		t.tx.Delete(sessOpenKey(sid))
		return nil
	})
	if err != nil {
		return fmt.Errorf("meta: remove session %d: %w", sid, err)
	}
	return nil
}

// recordOpen notes in the transaction that this session has ino open.
func (t *txn) recordOpen(ino Ino) {
	sid := strconv.FormatUint(t.m.sessionID(), 10)
	t.tx.HSet(openKey(ino), sid, []byte{1})
	t.tx.HSet(sessOpenKey(t.m.sessionID()), strconv.FormatUint(uint64(ino), 10), []byte{1})
}

// unrecordOpen drops session sid's open record of ino and deletes the
// inode when it was unlinked and nobody has it open any more.
func (t *txn) unrecordOpen(sid uint64, ino Ino) error {
	t.tx.HDel(openKey(ino), strconv.FormatUint(sid, 10))
	t.tx.HDel(sessOpenKey(sid), strconv.FormatUint(uint64(ino), 10))
	n, err := t.tx.HLen(openKey(ino))
	if err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	a, err := t.attr(ino)
	if err == syscall.ENOENT {
		return nil
	}
	if err != nil {
		return err
	}
	if a.Nlink == 0 {
		return t.destroy(ino, a)
	}
	return nil
}

// SetDeleter sets the function background jobs call to delete the blocks
// of a freed slice. Until it is set, freed slices wait in the queue.
func (m *Meta) SetDeleter(fn func(ctx context.Context, id uint64, size uint32) error) {
	m.deleter.Lock()
	m.deleter.fn = fn
	m.deleter.Unlock()
	m.wakeJobs()
}

func (m *Meta) getDeleter() func(ctx context.Context, id uint64, size uint32) error {
	m.deleter.Lock()
	defer m.deleter.Unlock()
	return m.deleter.fn
}

// queueSlices puts the stored slices of ss on the delete queue, due at due.
func (t *txn) queueSlices(ss []slice.Slice, due time.Time) {
	for _, s := range ss {
		if s.ID == 0 {
			continue
		}
		v := binary.BigEndian.AppendUint32(nil, s.Size)
		v = binary.BigEndian.AppendUint64(v, uint64(due.UnixNano()))
		t.tx.HSet(keyDelSlices, strconv.FormatUint(s.ID, 10), v)
		t.fx.wake = true
	}
}

// deleteFiles moves the slices of removed files to the delete queue,
// a batch of chunks per transaction.
func (m *Meta) deleteFiles(ctx context.Context) error {
	var files map[string][]byte
	if err := m.view(ctx, func(t *txn) error {
		var err error
		files, err = t.tx.HGetAll(keyDelFiles)
		return err
	}); err != nil {
		return err
	}
	for f, v := range files {
		ino, err := strconv.ParseUint(f, 10, 64)
		if err != nil || len(v) != 8 {
			m.log.Error("meta: corrupt entry in the file delete queue; dropping it", "field", f)
			_ = m.update(ctx, func(t *txn) error { t.tx.HDel(keyDelFiles, f); return nil })
			continue
		}
		size := binary.BigEndian.Uint64(v)
		chunks := (size + slice.ChunkSize - 1) / slice.ChunkSize
		const batch = 64
		for first := uint64(0); first < chunks; first += batch {
			last := min(first+batch, chunks)
			err := m.update(ctx, func(t *txn) error {
				keys := make([]string, 0, last-first)
				for i := first; i < last; i++ {
					keys = append(keys, chunkKey(Ino(ino), uint32(i)))
				}
				vals, err := t.tx.MGet(keys...)
				if err != nil {
					return err
				}
				for i, b := range vals {
					if b == nil {
						continue
					}
					ss, err := slice.Decode(b)
					if err != nil {
						m.log.Error("meta: corrupt slice list of a deleted file; its blocks are left for gc", "key", keys[i], "err", err)
					}
					t.queueSlices(ss, t.now)
					t.tx.Delete(keys[i])
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("delete data of inode %d: %w", ino, err)
			}
		}
		if err := m.update(ctx, func(t *txn) error { t.tx.HDel(keyDelFiles, f); return nil }); err != nil {
			return err
		}
	}
	return nil
}

// freeSlices deletes the blocks of queued slices that are due.
func (m *Meta) freeSlices(ctx context.Context) error {
	del := m.getDeleter()
	if del == nil {
		return nil
	}
	var queue map[string][]byte
	if err := m.view(ctx, func(t *txn) error {
		var err error
		queue, err = t.tx.HGetAll(keyDelSlices)
		return err
	}); err != nil {
		return err
	}
	now := time.Now()
	var done []string
	var firstErr error
	for f, v := range queue {
		id, err := strconv.ParseUint(f, 10, 64)
		if err != nil || len(v) != 12 {
			m.log.Error("meta: corrupt entry in the slice delete queue; dropping it", "field", f)
			done = append(done, f)
			continue
		}
		if time.Unix(0, int64(binary.BigEndian.Uint64(v[4:]))).After(now) {
			continue
		}
		if err := del(ctx, id, binary.BigEndian.Uint32(v)); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("delete slice %d: %w", id, err)
			}
			continue
		}
		done = append(done, f)
	}
	for len(done) > 0 {
		n := min(len(done), 512)
		part := done[:n]
		done = done[n:]
		if err := m.update(ctx, func(t *txn) error { t.tx.HDel(keyDelSlices, part...); return nil }); err != nil {
			return err
		}
	}
	return firstErr
}
