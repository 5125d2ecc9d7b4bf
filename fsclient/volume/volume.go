package volume

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/format"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/object/stores"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

// markerKey is the object, under the volume's prefix in the bucket, that
// records which volume owns that prefix.
const markerKey = "skiff-volume.json"

// Config opens an existing volume.
type Config struct {
	MetaURL string
	// Passphrase unlocks an encrypted volume's data key; ignored otherwise.
	Passphrase []byte
	// Meta and Chunk carry tuning; the format-derived fields of Chunk
	// (BlockSize, Compression, Key) are filled in by Open.
	Meta  meta.Options
	Chunk chunk.Config
	// CredentialsFile is an optional GCS service-account key file.
	CredentialsFile string
	// Cache, if not nil, gives the volume a local block cache in the
	// directory Cache.Dir/<volume uuid>, so volumes sharing a cache
	// directory never share entries; Open sets Chunk.Cache to it. nil: no
	// cache.
	Cache  *cache.Config
	Logger *slog.Logger
	// RepairSliceIDs: when the metadata's slice counter is below the
	// bucket's high-water mark (a rolled-back engine), raise the counter
	// past the mark instead of refusing to open (fsck --repair-ids).
	RepairSliceIDs bool
	// Restricted is for privileged callers (the sidecar, the CSI plugin)
	// whose META_URL and credentials come from a pod author: only Redis
	// META_URLs (meta.CheckRestricted), only gs:// buckets (a file://
	// bucket recorded in a pod author's Redis would have root write where
	// that author says) and restricted GCS credentials
	// (gcs.CheckCredentials). Default false.
	Restricted bool
}

// Volume is an opened volume: its metadata client, its settings, its object
// store (already scoped to the volume's prefix) and its chunk store.
type Volume struct {
	Meta    *meta.Meta
	Format  *format.Format
	Objects object.Store
	Chunks  *chunk.Store
	Cache   *cache.Cache // nil without Config.Cache
}

// Open connects to the metadata engine named by cfg.MetaURL, loads the
// volume's settings, opens its bucket and builds the chunk store. It does
// not register a session; callers that serve files call
// v.Meta.NewSession.
func Open(ctx context.Context, cfg Config) (*Volume, error) {
	if cfg.MetaURL == "" {
		return nil, errors.New("no META_URL given: pass the volume's metadata URL, e.g. redis://host:6379/1 or bolt:///path/vol.db")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Restricted {
		if err := meta.CheckRestricted(cfg.MetaURL); err != nil {
			return nil, err
		}
	}
	im := &idMark{window: markWindowBatches * uint64(max(cfg.Meta.IDBatch, 1000))}
	if cfg.Meta.OnSliceIDs == nil {
		cfg.Meta.OnSliceIDs = im.advance
	}
	m, err := meta.Open(ctx, cfg.MetaURL, cfg.Meta)
	if err != nil {
		return nil, err
	}
	f, err := m.Load(ctx)
	if err != nil {
		m.Close(ctx)
		return nil, err
	}
	objs, err := openBucket(ctx, f.Bucket, f.Name, cfg.CredentialsFile, cfg.Restricted)
	if err != nil {
		m.Close(ctx)
		return nil, err
	}
	im.mu.Lock()
	im.objs, im.f, im.meta = objs, f, m.Name()
	im.mu.Unlock()
	if !cfg.Meta.ReadOnly {
		if err := im.checkSliceIDs(ctx, m, cfg.RepairSliceIDs); err != nil {
			stores.Close(objs)
			m.Close(ctx)
			return nil, err
		}
	}
	cc := cfg.Chunk
	cc.BlockSize = f.BlockSize
	cc.Compression = f.Compression
	cc.BlockFormat, cc.OldBlocks = f.BlockFormat(), f.MixedBlocks()
	cc.Logger = cfg.Logger
	var cs *chunk.Store
	var bc *cache.Cache
	if f.Encryption != nil {
		cc.Key, err = chunk.OpenKey(f.Encryption, cfg.Passphrase)
	}
	if err == nil && cfg.Cache != nil {
		ccfg := *cfg.Cache
		if ccfg.Dir == "" {
			err = errors.New("no cache directory given")
		} else {
			ccfg.Dir = filepath.Join(ccfg.Dir, f.UUID)
			if ccfg.Logger == nil {
				ccfg.Logger = cfg.Logger
			}
			bc, err = cache.New(ccfg)
			cc.Cache = bc
		}
	}
	if err == nil {
		cs, err = chunk.New(objs, cc)
	}
	if err != nil {
		if bc != nil {
			bc.Close()
		}
		stores.Close(objs)
		m.Close(ctx)
		return nil, err
	}
	m.SetDeleter(cs.DeleteSlice)
	return &Volume{Meta: m, Format: f, Objects: objs, Chunks: cs, Cache: bc}, nil
}

// Close stops the chunk store and ends the metadata session, if any.
func (v *Volume) Close(ctx context.Context) error {
	// Meta first: it stops the background jobs that delete through Chunks.
	err := errors.Join(v.Meta.Close(ctx), v.Chunks.Close(), stores.Close(v.Objects))
	if v.Cache != nil {
		err = errors.Join(err, v.Cache.Close())
	}
	return err
}

// FormatConfig creates (or, with Force, re-writes the settings of) a volume.
type FormatConfig struct {
	MetaURL string
	Name    string
	// Bucket is the object store URL: gs://bucket[/prefix], file:///dir or a
	// plain path. Empty is allowed for bolt:// volumes: blocks then live in
	// a directory beside the metadata file.
	Bucket      string
	BlockSize   uint32 // 0 = slice.DefaultBlockSize
	Compression string // "" = none
	Encrypt     bool
	Passphrase  []byte // required when Encrypt
	Force       bool
	// CredentialsFile is an optional GCS service-account key file.
	CredentialsFile string
}

// Create formats a volume: it validates the settings, checks that the
// bucket is reachable and writable and that no other volume owns the name
// there, then records the settings in the metadata engine.
func Create(ctx context.Context, fc FormatConfig) (*format.Format, error) {
	if fc.BlockSize == 0 {
		fc.BlockSize = slice.DefaultBlockSize
	}
	if fc.Compression == "" {
		fc.Compression = "none"
	}
	if fc.Bucket == "" {
		b, err := defaultBucket(fc.MetaURL)
		if err != nil {
			return nil, err
		}
		fc.Bucket = b
	}
	f := &format.Format{
		Name:        fc.Name,
		UUID:        newUUID(),
		Version:     format.Version,
		Bucket:      fc.Bucket,
		BlockSize:   fc.BlockSize,
		Compression: fc.Compression,
		Created:     time.Now().UTC().Truncate(time.Second),
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	m, err := meta.Open(ctx, fc.MetaURL, meta.Options{})
	if err != nil {
		return nil, err
	}
	defer m.Close(ctx)
	old, err := m.Load(ctx)
	switch {
	case err == nil && !fc.Force:
		return nil, fmt.Errorf("volume %q is already formatted at %s: use --force to re-write its settings (files are kept)", old.Name, m.Name())
	case err == nil:
		// Re-format keeps identity and data: only tunables may change.
		f.UUID, f.Created = old.UUID, old.Created
		// It moves the volume to this data format (new blocks get
		// checksums); blocks written before stay readable.
		if oldest := cmp.Or(old.OldestVersion, old.BlockFormat()); oldest < f.Version {
			f.OldestVersion = oldest
		}
		if old.Encryption != nil || fc.Encrypt {
			f.Encryption = old.Encryption
			if fc.Encrypt && old.Encryption == nil {
				return nil, fmt.Errorf("volume %q exists without encryption; encryption can only be chosen at the first format", old.Name)
			}
		}
	case !errors.Is(err, meta.ErrNoVolume):
		return nil, err
	}
	if fc.Encrypt && f.Encryption == nil {
		if len(fc.Passphrase) == 0 {
			return nil, errors.New("--encrypt needs a passphrase: set SKIFF_PASSPHRASE or pass --passphrase-file")
		}
		sealed, _, err := chunk.NewKey(fc.Passphrase)
		if err != nil {
			return nil, err
		}
		f.Encryption = sealed
	}
	objs, err := openBucket(ctx, f.Bucket, f.Name, fc.CredentialsFile, false)
	if err != nil {
		return nil, err
	}
	defer stores.Close(objs)
	if err := claimPrefix(ctx, objs, f, m.Name(), fc.Force); err != nil {
		return nil, err
	}
	if err := m.Format(ctx, f, fc.Force); err != nil {
		return nil, err
	}
	return f, nil
}

// marker is the content of markerKey.
type marker struct {
	UUID    string    `json:"uuid"`
	Name    string    `json:"name"`
	Meta    string    `json:"meta"` // engine name, never with a password
	Created time.Time `json:"created"`
	// SliceIDs is the slice-id high-water mark (idmark.go); absent on
	// volumes no client has written since it was introduced.
	SliceIDs *SliceIDMark `json:"sliceIds,omitempty"`
}

// claimPrefix makes sure the volume's prefix in the bucket is either empty
// or already this volume's, proves the bucket is writable, and records the
// owner.
func claimPrefix(ctx context.Context, objs object.Store, f *format.Format, metaName string, force bool) error {
	rc, err := objs.Get(ctx, markerKey, 0, -1)
	var ids *SliceIDMark // kept across a re-format of the same volume
	switch {
	case err == nil:
		var mk marker
		b, rerr := io.ReadAll(rc)
		rc.Close()
		if rerr != nil {
			return fmt.Errorf("read %s in %s: %w", markerKey, objs, rerr)
		}
		jerr := json.Unmarshal(b, &mk)
		if jerr == nil && mk.UUID == f.UUID {
			ids = mk.SliceIDs
		}
		if jerr != nil || mk.UUID != f.UUID {
			if !force {
				return fmt.Errorf("%s already holds volume %q (uuid %s, metadata %s): choose another volume name, or --force to take the prefix over", objs, mk.Name, mk.UUID, mk.Meta)
			}
		}
	case errors.Is(err, object.ErrNotFound):
		page, lerr := objs.List(ctx, "", "", 1)
		if lerr != nil {
			return fmt.Errorf("list %s: %w", objs, lerr)
		}
		if len(page) > 0 && !force {
			return fmt.Errorf("%s is not empty (it holds %q) but belongs to no skiff volume: choose another volume name or bucket prefix, or --force", objs, page[0].Key)
		}
	default:
		return fmt.Errorf("cannot read from bucket %s: %w", objs, err)
	}
	b, _ := json.Marshal(marker{UUID: f.UUID, Name: f.Name, Meta: metaName, Created: f.Created, SliceIDs: ids})
	if err := objs.Put(ctx, markerKey, b); err != nil {
		return fmt.Errorf("cannot write to bucket %s (check the URL and the credentials' write permission): %w", objs, err)
	}
	return nil
}

// defaultBucket is the block directory of a bolt:// volume: a directory
// beside the metadata file.
func defaultBucket(metaURL string) (string, error) {
	u, err := url.Parse(metaURL)
	if err != nil || u.Scheme != "bolt" {
		return "", errors.New("--bucket is required for this META_URL (only bolt:// volumes keep blocks beside their metadata file)")
	}
	p := u.Path
	if u.Host != "" { // bolt://relative/path
		p = u.Host + p
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return "file://" + filepath.Join(filepath.Dir(abs), strings.TrimSuffix(filepath.Base(abs), filepath.Ext(abs))+"-blocks"), nil
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// openBucket opens the bucket URL and scopes it to the volume's name, so
// several volumes can share one bucket.
func openBucket(ctx context.Context, bucketURL, name, credentials string, restricted bool) (object.Store, error) {
	var opts []stores.Option
	if credentials != "" {
		opts = append(opts, stores.WithCredentialsFile(credentials))
	}
	if restricted {
		if loc, err := stores.Parse(bucketURL); err == nil && loc.Scheme != "gs" {
			return nil, fmt.Errorf("bucket %s refused: privileged skiff components store blocks only in gs:// buckets (a directory bucket only for trusted inputs)", bucketURL)
		}
		opts = append(opts, stores.WithRestricted())
	}
	s, err := stores.Open(ctx, bucketURL, opts...)
	if err != nil {
		return nil, err
	}
	return object.WithPrefix(s, name+"/"), nil
}

// ChunkMeta adapts the volume's metadata client to what package chunk
// needs (chunk takes plain uint64 inode numbers).
func (v *Volume) ChunkMeta() chunk.Meta { return chunkMeta{v.Meta} }

type chunkMeta struct{ m *meta.Meta }

func (c chunkMeta) NewSliceID(ctx context.Context) (uint64, error) { return c.m.NewSliceID(ctx) }

func (c chunkMeta) ReadChunk(ctx context.Context, ino uint64, chunk uint32) ([]slice.Slice, error) {
	return c.m.ReadChunk(ctx, meta.Ino(ino), chunk)
}

func (c chunkMeta) WriteChunk(ctx context.Context, ino uint64, chunk uint32, s slice.Slice, mtime time.Time) error {
	return c.m.WriteChunk(ctx, meta.Ino(ino), chunk, s, mtime)
}

func (c chunkMeta) CompactChunk(ctx context.Context, ino uint64, index uint32, old, repl []slice.Slice) error {
	err := c.m.CompactChunk(ctx, meta.Ino(ino), index, old, repl)
	if errors.Is(err, meta.ErrChunkChanged) {
		return fmt.Errorf("%w: %w", chunk.ErrChunkChanged, err)
	}
	return err
}
