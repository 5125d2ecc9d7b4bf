package bolt

import (
	"context"
	"time"
)

// Now is the local clock: an embedded volume has one client process, so
// there is no other clock to agree with.
func (e *Engine) Now(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}
