package chunk

import (
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/skiff-fs/skiff/fsclient/format"
)

// ErrWrongPassphrase is returned by OpenKey when the passphrase does not
// unwrap the volume's data key.
var ErrWrongPassphrase = errors.New("wrong passphrase for the volume's encryption key")

// ErrNoPassphrase is returned by OpenKey for an encrypted volume when no
// passphrase was given.
var ErrNoPassphrase = errors.New("volume is encrypted: set SKIFF_PASSPHRASE or pass --passphrase-file")

const (
	cipherName = "xchacha20poly1305"
	kdfName    = "argon2id"
	saltSize   = 16
)

// wrapAD binds a wrapped data key to its purpose.
var wrapAD = []byte("skiff data key v1")

// kdfParams are the argon2id costs NewKey records in a new Sealed. Tests
// lower them; OpenKey always uses the costs recorded in the Sealed.
var kdfParams = struct {
	time, memoryKiB uint32
	threads         uint8
}{time: 3, memoryKiB: 64 << 10, threads: 4}

// NewKey makes a random data key for a new volume and seals it under a key
// derived from passphrase with argon2id (random 16-byte salt). The Sealed
// record goes into format.Format.Encryption; the data key goes into
// Config.Key and must never be stored or logged.
func NewKey(passphrase []byte) (*format.Sealed, []byte, error) {
	if len(passphrase) == 0 {
		return nil, nil, errors.New("an encrypted volume needs a passphrase: set SKIFF_PASSPHRASE or pass --passphrase-file")
	}
	dataKey := make([]byte, KeySize)
	salt := make([]byte, saltSize)
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	for _, b := range [][]byte{dataKey, salt, nonce} {
		if _, err := rand.Read(b); err != nil {
			return nil, nil, fmt.Errorf("generate encryption key: %w", err)
		}
	}
	s := &format.Sealed{
		Cipher:    cipherName,
		KDF:       kdfName,
		Salt:      salt,
		Time:      kdfParams.time,
		MemoryKiB: kdfParams.memoryKiB,
		Threads:   kdfParams.threads,
	}
	aead, err := chacha20poly1305.NewX(deriveKEK(s, passphrase))
	if err != nil {
		return nil, nil, err
	}
	s.WrappedKey = aead.Seal(nonce, nonce, dataKey, wrapAD)
	return s, dataKey, nil
}

// OpenKey unwraps the data key of a volume. A nil s (a volume without
// encryption) returns a nil key and no error. The errors are
// ErrNoPassphrase, ErrWrongPassphrase, or a description of a damaged or
// unsupported Sealed record.
func OpenKey(s *format.Sealed, passphrase []byte) ([]byte, error) {
	if s == nil {
		return nil, nil
	}
	if len(passphrase) == 0 {
		return nil, ErrNoPassphrase
	}
	switch {
	case s.Cipher != cipherName:
		return nil, fmt.Errorf("volume encryption cipher %q is not supported by this skiff (it knows %s)", s.Cipher, cipherName)
	case s.KDF != kdfName:
		return nil, fmt.Errorf("volume key derivation %q is not supported by this skiff (it knows %s)", s.KDF, kdfName)
	case len(s.Salt) < 8, s.Time < 1 || s.Time > 100, s.MemoryKiB < 8 || s.MemoryKiB > 4<<20, s.Threads < 1:
		return nil, fmt.Errorf("volume encryption settings are corrupt (salt %d bytes, time %d, memory %d KiB, threads %d)", len(s.Salt), s.Time, s.MemoryKiB, s.Threads)
	case len(s.WrappedKey) != chacha20poly1305.NonceSizeX+KeySize+chacha20poly1305.Overhead:
		return nil, fmt.Errorf("volume's wrapped data key is %d bytes, want %d: settings are corrupt", len(s.WrappedKey), chacha20poly1305.NonceSizeX+KeySize+chacha20poly1305.Overhead)
	}
	aead, err := chacha20poly1305.NewX(deriveKEK(s, passphrase))
	if err != nil {
		return nil, err
	}
	n := chacha20poly1305.NonceSizeX
	key, err := aead.Open(nil, s.WrappedKey[:n], s.WrappedKey[n:], wrapAD)
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	return key, nil
}

func deriveKEK(s *format.Sealed, passphrase []byte) []byte {
	return argon2.IDKey(passphrase, s.Salt, s.Time, s.MemoryKiB, s.Threads, KeySize)
}
