package bolt

import (
	"context"
	"fmt"
	"strings"

	"go.etcd.io/bbolt"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// HScan reads up to count fields of the hash at key in field order, each
// in its own read-only transaction. The cursor is ">" followed by the
// last field returned: the next page starts after it, so fields are never
// repeated, and ones added or removed between pages are seen or not
// depending on where they sort.
func (e *Engine) HScan(ctx context.Context, key, cursor string, count int) ([]kv.Field, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	var after []byte
	if cursor != "" {
		s, ok := strings.CutPrefix(cursor, ">")
		if !ok {
			return nil, "", fmt.Errorf("bolt hscan %q: bad cursor %q", key, cursor)
		}
		after = []byte(s)
	}
	count = max(count, 1)
	var out []kv.Field
	next := ""
	err := e.db.View(func(btx *bbolt.Tx) error {
		h := btx.Bucket(bucketHash).Bucket([]byte(key))
		if key == "" || h == nil {
			return nil
		}
		c := h.Cursor()
		k, v := c.First()
		if after != nil {
			k, v = c.Seek(after)
			if k != nil && string(k) == string(after) {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			if len(out) == count {
				next = ">" + string(out[len(out)-1].Name)
				return nil
			}
			out = append(out, kv.Field{Name: string(k), Value: clone(v)})
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("bolt hscan %q: %w", key, err)
	}
	return out, next, nil
}
