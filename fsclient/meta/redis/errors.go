package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/gomodule/redigo/redis"
)

// dialError is a failure to connect or log in, phrased for the user who
// wrote META_URL. It unwraps to the underlying error.
type dialError struct {
	msg       string
	err       error
	permanent bool // retrying cannot help (password, database number)
}

func (e *dialError) Error() string { return e.msg }
func (e *dialError) Unwrap() error { return e.err }

// explainDial turns an error from dialling addr into a one-line message
// that says what to fix.
func explainDial(addr string, db int, err error) error {
	var de *dialError
	if errors.As(err, &de) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var re redis.Error
	if errors.As(err, &re) {
		s := string(re)
		switch {
		case strings.HasPrefix(s, "WRONGPASS"), strings.Contains(s, "invalid password"),
			strings.Contains(s, "invalid username-password"):
			return &dialError{permanent: true, err: err,
				msg: fmt.Sprintf("redis rejected the password for %s (WRONGPASS): fix the password in META_URL", addr)}
		case strings.HasPrefix(s, "NOAUTH"):
			return &dialError{permanent: true, err: err,
				msg: fmt.Sprintf("redis at %s requires a password (NOAUTH): put it in META_URL as redis://:PASSWORD@%s/%d", addr, addr, db)}
		case strings.Contains(s, "without any password configured"):
			return &dialError{permanent: true, err: err,
				msg: fmt.Sprintf("redis at %s has no password set but META_URL gives one: remove it from META_URL (or set requirepass on the server)", addr)}
		case strings.Contains(s, "DB index is out of range"), strings.Contains(s, "invalid DB index"):
			return &dialError{permanent: true, err: err,
				msg: fmt.Sprintf("redis at %s has no database %d (%s): use a database number below the server's \"databases\" setting (default 16) in META_URL", addr, db, s)}
		case strings.Contains(s, "SELECT is not allowed in cluster mode"):
			return &dialError{permanent: true, err: err,
				msg: fmt.Sprintf("redis at %s is a cluster, which has only database 0: use /0 in META_URL", addr)}
		}
		return &dialError{err: err, msg: fmt.Sprintf("redis at %s refused the connection: %s", addr, s)}
	}
	var cause string
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recordErr tls.RecordHeaderError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		cause = "connection refused"
	case errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
		cause = "timed out"
	case errors.As(err, &dnsErr):
		cause = fmt.Sprintf("cannot resolve host %q", dnsErr.Name)
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		return &dialError{err: err, permanent: true,
			msg: fmt.Sprintf("TLS to redis at %s failed: the server certificate is not trusted (%v): give the CA in the client's TLS settings", addr, err)}
	case errors.As(err, &recordErr):
		return &dialError{err: err, permanent: true,
			msg: fmt.Sprintf("TLS to redis at %s failed: the server does not speak TLS (use redis:// instead of rediss://)", addr)}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		cause = "no route to host"
	default:
		cause = err.Error()
	}
	return &dialError{err: err,
		msg: fmt.Sprintf("cannot reach redis at %s: %s (is redis-server running? check META_URL)", addr, cause)}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isPermanent(err error) bool {
	var de *dialError
	return errors.As(err, &de) && de.permanent
}

// isTransient reports whether err means this connection (or this server)
// cannot serve us right now, while another connection, maybe to a new
// master, might: network errors and a few server states. A redis.Error
// reply is otherwise an answer, not a transport failure.
func isTransient(err error) bool {
	if err == nil || isPermanent(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		s := string(re)
		for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"} {
			if strings.HasPrefix(s, p) {
				return true
			}
		}
		return false
	}
	return true
}

// isReadOnly reports a write sent to a replica: the master moved.
func isReadOnly(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(string(re), "READONLY")
}
