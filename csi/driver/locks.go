package driver

import "sync"

// locks marks the volumes (or names) an operation is in flight for; a
// second operation on one of them is refused with Aborted, as the CSI spec
// allows, and the CO retries it.
type locks struct {
	mu   sync.Mutex
	busy map[string]struct{}
}

// tryLock takes key and reports whether it was free.
func (l *locks) tryLock(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy == nil {
		l.busy = make(map[string]struct{})
	}
	if _, ok := l.busy[key]; ok {
		return false
	}
	l.busy[key] = struct{}{}
	return true
}

func (l *locks) unlock(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.busy, key)
}
