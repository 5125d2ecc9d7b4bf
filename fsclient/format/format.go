package format

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

// Version is the data format version written by this code. Version 2
// stores an end-to-end checksum with every block (package chunk, "Stored
// block format"); version 1 blocks have none. A client reads blocks of both
// versions and writes new blocks in the volume's Version, so a version 1
// volume stays readable by older clients until its settings are
// re-written (skiff format --force), which moves it to this Version.
const Version = 2

// Compression names accepted at format time.
var Compressions = []string{"none", "lz4", "zstd"}

// Format is a volume's settings, fixed by `skiff format` and stored in the
// volume's metadata. Clients need only the META_URL: everything else about
// the volume is read from here.
type Format struct {
	Name    string `json:"name"`
	UUID    string `json:"uuid"`
	Version int    `json:"version"`
	// OldestVersion is the oldest data format version of blocks the volume
	// may hold, when older than Version (the volume was moved from
	// version 1 to 2 and keeps its version 1 blocks). 0: as Version.
	OldestVersion int       `json:"oldestVersion,omitempty"`
	Bucket        string    `json:"bucket"`      // object store URL: gs://b/p, file:///dir
	BlockSize     uint32    `json:"blockSize"`   // bytes
	Compression   string    `json:"compression"` // one of Compressions
	Encryption    *Sealed   `json:"encryption,omitempty"`
	Created       time.Time `json:"created"`
	// Capacity and Inodes are optional volume quotas (0 = unlimited).
	Capacity uint64 `json:"capacity,omitempty"`
	Inodes   uint64 `json:"inodes,omitempty"`
}

// Sealed holds the volume's random data key, wrapped (AEAD) by a key
// derived from the passphrase with a memory-hard KDF.
type Sealed struct {
	Cipher     string `json:"cipher"` // block cipher, e.g. "xchacha20poly1305"
	KDF        string `json:"kdf"`    // e.g. "argon2id"
	Salt       []byte `json:"salt"`
	Time       uint32 `json:"time"`
	MemoryKiB  uint32 `json:"memoryKiB"`
	Threads    uint8  `json:"threads"`
	WrappedKey []byte `json:"wrappedKey"` // nonce || AEAD(data key)
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)

// Validate checks every field and names the problem and the fix.
func (f *Format) Validate() error {
	if !nameRE.MatchString(f.Name) {
		return fmt.Errorf("volume name %q is invalid: use 2-63 characters of a-z, 0-9 and '-', starting with a letter or digit", f.Name)
	}
	if f.Version > Version {
		return fmt.Errorf("volume %q has data format version %d; this skiff understands up to %d: upgrade skiff", f.Name, f.Version, Version)
	}
	if f.OldestVersion < 0 || f.OldestVersion > f.Version {
		return fmt.Errorf("volume %q has oldest data format version %d, newer than its version %d: the settings are corrupt", f.Name, f.OldestVersion, f.Version)
	}
	if f.BlockSize < slice.MinBlockSize || f.BlockSize > slice.MaxBlockSize || f.BlockSize&(f.BlockSize-1) != 0 {
		return fmt.Errorf("block size %d is invalid: use a power of two between 64K and 16M", f.BlockSize)
	}
	if !validCompression(f.Compression) {
		return fmt.Errorf("unknown compression %q: use one of none, lz4, zstd", f.Compression)
	}
	if f.Bucket == "" {
		return fmt.Errorf("volume %q has no bucket URL", f.Name)
	}
	return nil
}

func validCompression(c string) bool {
	for _, x := range Compressions {
		if c == x {
			return true
		}
	}
	return false
}

// BlockFormat is the block format version new blocks of the volume are
// written in (its Version; 1 for records without one).
func (f *Format) BlockFormat() int { return max(f.Version, 1) }

// MixedBlocks reports whether the volume may hold blocks of a format older
// than BlockFormat.
func (f *Format) MixedBlocks() bool {
	return f.OldestVersion != 0 && f.OldestVersion < f.BlockFormat()
}

// Marshal encodes the format for storage.
func (f *Format) Marshal() ([]byte, error) { return json.Marshal(f) }

// Unmarshal decodes a stored format and validates it.
func Unmarshal(b []byte) (*Format, error) {
	var f Format
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("volume settings are corrupt: %w", err)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}
