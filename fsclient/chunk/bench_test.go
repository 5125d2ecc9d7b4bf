package chunk_test

import (
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

// benchSize is the bytes each benchmark iteration writes or reads.
const benchSize = 256 << 20

// benchIO is the request size, as FUSE sends with max_write=1 MiB.
const benchIO = 1 << 20

func benchData() []byte {
	r := rand.New(rand.NewPCG(1, 1))
	return random(r, benchIO)
}

// BenchmarkChunkStore writes and reads benchSize bytes through the chunk
// store on the directory object store (default block size, no
// compression, real bbolt metadata). Compare with BenchmarkPlainCopy.
func BenchmarkChunkStore(b *testing.B) {
	data := benchData()
	b.Run("write", func(b *testing.B) {
		e := newEnv(b, chunk.Config{BlockSize: slice.DefaultBlockSize}, nil)
		b.SetBytes(benchSize)
		b.ResetTimer()
		for range b.N {
			writeFile(b, e, data, benchSize)
		}
	})
	b.Run("read", func(b *testing.B) {
		e := newEnv(b, chunk.Config{BlockSize: slice.DefaultBlockSize}, nil)
		ino := writeFile(b, e, data, benchSize)
		p := make([]byte, benchIO)
		b.SetBytes(benchSize)
		b.ResetTimer()
		for range b.N {
			rd := e.s.NewReader(ino, e.meta)
			for off := int64(0); off < benchSize; off += benchIO {
				if _, err := rd.ReadAt(e.ctx, p, off, benchSize); err != nil && err != io.EOF {
					b.Fatal(err)
				}
			}
		}
	})
}

// BenchmarkPlainCopy writes and reads the same bytes to a plain file in
// the same kind of directory (t.TempDir), fsyncing after the write as the
// directory store does per object.
func BenchmarkPlainCopy(b *testing.B) {
	data := benchData()
	dir := b.TempDir()
	write := func(path string) {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < benchSize; off += benchIO {
			if _, err := f.WriteAt(data, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("write", func(b *testing.B) {
		b.SetBytes(benchSize)
		for range b.N {
			path := filepath.Join(dir, "w")
			os.Remove(path)
			write(path)
		}
	})
	b.Run("read", func(b *testing.B) {
		path := filepath.Join(dir, "r")
		write(path)
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		p := make([]byte, benchIO)
		b.SetBytes(benchSize)
		b.ResetTimer()
		for range b.N {
			for off := int64(0); off < benchSize; off += benchIO {
				if _, err := f.ReadAt(p, off); err != nil && err != io.EOF {
					b.Fatal(err)
				}
			}
		}
	})
}
