package inject

import (
	"errors"
	"fmt"
)

// DeniedError is a policy refusal: the pod cannot be admitted as it is, and
// Reason says why and what to change.
type DeniedError struct {
	Reason string
}

func (e *DeniedError) Error() string { return e.Reason }

// IsDenied reports whether err is (or wraps) a *DeniedError, and returns it.
func IsDenied(err error) (*DeniedError, bool) {
	var d *DeniedError
	ok := errors.As(err, &d)
	return d, ok
}

func denyf(format string, args ...any) error {
	return &DeniedError{Reason: "skiff: " + fmt.Sprintf(format, args...)}
}
