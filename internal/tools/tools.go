//go:build tools

// Package tools pins dependencies before the packages that use them land.
package tools

import (
	_ "cloud.google.com/go/storage"
	_ "github.com/fsouza/fake-gcs-server/fakestorage"
	_ "github.com/gomodule/redigo/redis"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/hanwen/go-fuse/v2/fuse"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/pierrec/lz4/v4"
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/crypto/argon2"
	_ "golang.org/x/crypto/chacha20poly1305"
	_ "golang.org/x/sync/singleflight"
	_ "google.golang.org/api/googleapi"
)
