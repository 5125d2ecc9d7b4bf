package meta

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/skiff-fs/skiff/fsclient/format"
	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// ErrNoVolume is returned (wrapped) by Load when the engine holds no volume.
var ErrNoVolume = errors.New("no volume")

// Format writes the volume settings f and creates the root directory. An
// existing volume is refused unless force is set; with force the settings
// are rewritten but existing files are kept, and the data layout (name,
// block size, compression, encryption) of a volume that holds data cannot
// change.
func (m *Meta) Format(ctx context.Context, f *format.Format, force bool) error {
	if err := f.Validate(); err != nil {
		return err
	}
	nf := *f
	if nf.Version == 0 {
		nf.Version = format.Version
	}
	if nf.Created.IsZero() {
		nf.Created = time.Now().UTC()
	}
	err := m.update(ctx, func(t *txn) error {
		old, err := t.tx.Get(keySetting)
		if err != nil {
			return fmt.Errorf("read volume settings: %w", err)
		}
		if old != nil {
			if !force {
				name := "?"
				if of, err := format.Unmarshal(old); err == nil {
					name = of.Name
				}
				return fmt.Errorf("volume %s is already formatted at %s; use --force to overwrite its settings", name, m.Name())
			}
			if of, err := format.Unmarshal(old); err == nil {
				if err := m.checkReformat(t, of, &nf); err != nil {
					return err
				}
				if nf.UUID == "" {
					nf.UUID = of.UUID
				}
				nf.Created = of.Created
			}
		}
		b, err := nf.Marshal()
		if err != nil {
			return fmt.Errorf("encode volume settings: %w", err)
		}
		t.tx.Set(keySetting, b)
		root, err := t.tx.Get(inodeKey(RootIno))
		if err != nil {
			return fmt.Errorf("read root inode: %w", err)
		}
		if root == nil {
			a := Attr{Typ: TypeDir, Mode: 0o777, Nlink: 2, Size: 4096, Parent: RootIno}
			setTime(&a.Atime, &a.Atimensec, t.now)
			t.mtime(&a)
			t.create(RootIno, a)
			t.tx.Set(keyUsedInodes, []byte("1"))
			t.tx.Set(keyUsedSpace, []byte("0"))
		}
		if n, err := t.tx.Get(keyNextInode); err != nil {
			return fmt.Errorf("read inode counter: %w", err)
		} else if n == nil {
			t.tx.Set(keyNextInode, []byte(strconv.Itoa(int(RootIno))))
		}
		return nil
	})
	if err != nil {
		return err
	}
	m.fmtMu.Lock()
	m.fmtMu.f = &nf
	m.fmtMu.Unlock()
	return nil
}

func (m *Meta) checkReformat(t *txn, old, nf *format.Format) error {
	n, err := t.tx.HLen(dirKey(RootIno))
	if err != nil {
		return fmt.Errorf("read root directory: %w", err)
	}
	sl, err := t.tx.Get(keyNextSlice)
	if err != nil {
		return fmt.Errorf("read slice counter: %w", err)
	}
	if n == 0 && sl == nil {
		return nil // no data yet: anything may change
	}
	oe, _ := json.Marshal(old.Encryption)
	ne, _ := json.Marshal(nf.Encryption)
	switch {
	case old.Name != nf.Name:
		return fmt.Errorf("volume %s at %s holds data: its name cannot change to %s", old.Name, m.Name(), nf.Name)
	case old.BlockSize != nf.BlockSize:
		return fmt.Errorf("volume %s holds data: its block size cannot change from %d to %d", old.Name, old.BlockSize, nf.BlockSize)
	case old.Compression != nf.Compression:
		return fmt.Errorf("volume %s holds data: its compression cannot change from %s to %s", old.Name, old.Compression, nf.Compression)
	case !bytes.Equal(oe, ne):
		return fmt.Errorf("volume %s holds data: its encryption settings cannot change", old.Name)
	}
	return nil
}

// Load reads the volume settings.
func (m *Meta) Load(ctx context.Context) (*format.Format, error) {
	var b []byte
	err := m.engine.View(ctx, func(tx kv.Tx) error {
		var err error
		b, err = tx.Get(keySetting)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read volume settings from %s: %w", m.Name(), err)
	}
	if b == nil {
		return nil, fmt.Errorf("%w at %s: run skiff format first", ErrNoVolume, m.Name())
	}
	f, err := format.Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("volume at %s: %w", m.Name(), err)
	}
	m.fmtMu.Lock()
	m.fmtMu.f = f
	m.fmtMu.Unlock()
	return f, nil
}

func (m *Meta) format() *format.Format {
	m.fmtMu.Lock()
	defer m.fmtMu.Unlock()
	return m.fmtMu.f
}

// StatFS is the volume's capacity and usage.
type StatFS struct {
	TotalBytes, UsedBytes, AvailBytes uint64
	Inodes, UsedInodes                uint64
}

// Capacity reported for volumes without a quota.
const (
	defaultCapacity = 1 << 50 // 1 PiB
	defaultInodes   = 1 << 32
)

// StatFS returns usage counters (maintained after each commit, so they may
// lag a crashed client's last changes) and the capacity from the volume's
// quotas or a large default.
func (m *Meta) StatFS(ctx context.Context) (StatFS, error) {
	var vals [][]byte
	err := m.engine.View(ctx, func(tx kv.Tx) error {
		var err error
		vals, err = tx.MGet(keyUsedSpace, keyUsedInodes)
		return err
	})
	if err != nil {
		return StatFS{}, fmt.Errorf("read usage: %w", err)
	}
	num := func(b []byte) uint64 {
		n, _ := strconv.ParseInt(string(b), 10, 64)
		return uint64(max(n, 0))
	}
	st := StatFS{UsedBytes: num(vals[0]), UsedInodes: num(vals[1]), TotalBytes: defaultCapacity}
	st.Inodes = st.UsedInodes + defaultInodes
	if f := m.format(); f != nil {
		if f.Capacity > 0 {
			st.TotalBytes = f.Capacity
		}
		if f.Inodes > 0 {
			st.Inodes = max(f.Inodes, st.UsedInodes)
		}
	}
	st.TotalBytes = max(st.TotalBytes, st.UsedBytes)
	st.AvailBytes = st.TotalBytes - st.UsedBytes
	return st, nil
}
