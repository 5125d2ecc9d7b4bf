package redis

import (
	"context"
	"fmt"

	"github.com/gomodule/redigo/redis"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// HScan is one HSCAN key cursor COUNT count. The cursor lives in the
// client, so a broken connection retries the same page on a new one.
// Redis's cursor "0" is both the start and the end; kv's is "".
func (e *Engine) HScan(ctx context.Context, key, cursor string, count int) ([]kv.Field, string, error) {
	if cursor == "" {
		cursor = "0"
	}
	for broken := 0; ; broken++ {
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		fields, next, err := e.hscanStep(ctx, key, cursor, count)
		if err == nil {
			if next == "0" {
				next = ""
			}
			return fields, next, nil
		}
		if !isTransient(err) || ctx.Err() != nil || broken >= connRetries {
			return nil, "", fmt.Errorf("redis %s hscan %q: %w", e.cfg.name(), key, err)
		}
		e.noteBroken(err)
		if err := sleep(ctx, connBackoff(broken)); err != nil {
			return nil, "", err
		}
	}
}

func (e *Engine) hscanStep(ctx context.Context, key, cursor string, count int) ([]kv.Field, string, error) {
	c, _, err := e.get(ctx)
	if err != nil {
		return nil, "", err
	}
	defer c.Close()
	vs, err := redis.Values(redis.DoContext(c, ctx, "HSCAN", e.key(key), cursor, "COUNT", max(count, 1)))
	if err != nil {
		return nil, "", err
	}
	if len(vs) != 2 {
		return nil, "", fmt.Errorf("odd HSCAN reply of %d elements", len(vs))
	}
	next, err := redis.String(vs[0], nil)
	if err != nil {
		return nil, "", err
	}
	kvs, err := redis.ByteSlices(vs[1], nil)
	if err != nil {
		return nil, "", err
	}
	if len(kvs)%2 != 0 {
		return nil, "", fmt.Errorf("odd HSCAN field list of %d elements", len(kvs))
	}
	fields := make([]kv.Field, 0, len(kvs)/2)
	for i := 0; i < len(kvs); i += 2 {
		fields = append(fields, kv.Field{Name: string(kvs[i]), Value: kvs[i+1]})
	}
	return fields, next, nil
}
