package redis

import (
	"context"
	"fmt"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Now is the server's TIME: every client of a volume reads one clock, so
// session heartbeats compare across hosts whose clocks drift. A broken
// connection is retried like a View.
func (e *Engine) Now(ctx context.Context) (time.Time, error) {
	for broken := 0; ; broken++ {
		t, err := e.timeOnce(ctx)
		if err == nil {
			return t, nil
		}
		if !isTransient(err) || ctx.Err() != nil || broken >= connRetries {
			return time.Time{}, fmt.Errorf("redis %s time: %w", e.cfg.name(), err)
		}
		e.noteBroken(err)
		if err := sleep(ctx, connBackoff(broken)); err != nil {
			return time.Time{}, err
		}
	}
}

func (e *Engine) timeOnce(ctx context.Context) (time.Time, error) {
	c, _, err := e.get(ctx)
	if err != nil {
		return time.Time{}, err
	}
	defer c.Close()
	vs, err := redis.Int64s(redis.DoContext(c, ctx, "TIME"))
	if err != nil {
		return time.Time{}, err
	}
	if len(vs) != 2 {
		return time.Time{}, fmt.Errorf("odd TIME reply of %d elements", len(vs))
	}
	return time.Unix(vs[0], vs[1]*1000), nil
}
