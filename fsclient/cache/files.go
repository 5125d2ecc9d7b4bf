package cache

import (
	"container/list"
	"os"
	"sync"
)

// maxOpenFiles is how many entry files a Cache keeps open.
const maxOpenFiles = 64

// openFile is an entry file kept open. refs counts the users reading it
// now, plus one while it is in files' map.
type openFile struct {
	key  string
	f    *os.File
	lay  *layout // read and verified when the file was opened
	refs int
	elem *list.Element
}

// files keeps the most recently read entry files open, with their
// verified piece tables, so a read of a cached range costs one pread (the
// tables of all entries are not kept: 1/4096 of the cache's size), and the kernel's read-ahead state of a
// file survives between reads. A file whose entry is unlinked is closed
// (once its readers are done), so its disk space is freed.
type files struct {
	mu  sync.Mutex
	m   map[string]*openFile
	lru list.List // of *openFile, most recently used at the front
}

// get returns key's open file, opening it with open if needed. Call put
// when done with it.
func (fs *files) get(key string, open func(key string) (*os.File, *layout, error)) (*openFile, error) {
	fs.mu.Lock()
	if of := fs.m[key]; of != nil {
		of.refs++
		fs.lru.MoveToFront(of.elem)
		fs.mu.Unlock()
		return of, nil
	}
	fs.mu.Unlock()
	f, lay, err := open(key)
	if err != nil {
		return nil, err
	}
	of := &openFile{key: key, f: f, lay: lay, refs: 2}
	var closeNow []*os.File
	fs.mu.Lock()
	if fs.m == nil {
		fs.m = make(map[string]*openFile)
	}
	if old := fs.m[key]; old != nil {
		// Opened meanwhile by another reader: use that one.
		old.refs++
		fs.lru.MoveToFront(old.elem)
		fs.mu.Unlock()
		f.Close()
		return old, nil
	}
	fs.m[key] = of
	of.elem = fs.lru.PushFront(of)
	for fs.lru.Len() > maxOpenFiles {
		if f := fs.dropLocked(fs.lru.Back().Value.(*openFile)); f != nil {
			closeNow = append(closeNow, f)
		}
	}
	fs.mu.Unlock()
	for _, f := range closeNow {
		f.Close()
	}
	return of, nil
}

// put ends a use of of.
func (fs *files) put(of *openFile) {
	fs.mu.Lock()
	of.refs--
	last := of.refs == 0
	fs.mu.Unlock()
	if last {
		of.f.Close()
	}
}

// forget closes key's file, if open, once its readers are done (its entry
// is being unlinked, or was found damaged).
func (fs *files) forget(key string) {
	fs.mu.Lock()
	var f *os.File
	if of := fs.m[key]; of != nil {
		f = fs.dropLocked(of)
	}
	fs.mu.Unlock()
	if f != nil {
		f.Close()
	}
}

// dropLocked removes of from the map; it returns its file if nobody is
// reading it, for the caller to close outside the lock.
func (fs *files) dropLocked(of *openFile) *os.File {
	fs.lru.Remove(of.elem)
	delete(fs.m, of.key)
	of.refs--
	if of.refs == 0 {
		return of.f
	}
	return nil
}

// closeAll closes every file nobody is reading (the others close when
// their readers are done).
func (fs *files) closeAll() {
	fs.mu.Lock()
	var fl []*os.File
	for _, of := range fs.m {
		if f := fs.dropLocked(of); f != nil {
			fl = append(fl, f)
		}
	}
	fs.mu.Unlock()
	for _, f := range fl {
		f.Close()
	}
}
