package redis

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/skiff-fs/skiff/internal/redact"
)

const (
	schemeRedis    = "redis"
	schemeRediss   = "rediss"
	schemeSentinel = "redis+sentinel"

	defaultPort         = "6379"
	defaultSentinelPort = "26379"

	// defaultTag prefixes every key of a volume opened without ?prefix=.
	defaultTag = "{skiff}"
)

// config is a parsed META_URL.
type config struct {
	scheme   string
	addrs    []string // the server, or the sentinels
	master   string   // sentinel master name
	user     string
	password string
	db       int
	prefix   string // the ?prefix= value, "" when absent
	tls      bool
}

// tag is the string put before every key: "{NAME}" or "{skiff}".
func (c *config) tag() string {
	if c.prefix != "" {
		return "{" + c.prefix + "}"
	}
	return defaultTag
}

// name is the URL without its user information, for messages and logs.
func (c *config) name() string {
	var b strings.Builder
	b.WriteString(c.scheme)
	b.WriteString("://")
	b.WriteString(strings.Join(c.addrs, ","))
	b.WriteString("/")
	if c.master != "" {
		b.WriteString(c.master)
		b.WriteString("/")
	}
	b.WriteString(strconv.Itoa(c.db))
	if c.prefix != "" {
		b.WriteString("?prefix=")
		b.WriteString(c.prefix)
	}
	return b.String()
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// splitUserinfo takes the user information (from "://" to the last "@",
// the rule of package redact) out of raw, so that a password holding
// "/", "#", "?", "@" or ":" written without escapes still parses: the
// user is what comes before the first ":", the password the rest, each
// percent-decoded. It returns raw without the user information.
func splitUserinfo(raw string) (rest, user, password string, err error) {
	scheme, after, _ := strings.Cut(raw, "://")
	at := strings.LastIndex(after, "@")
	if at < 0 {
		return raw, "", "", nil
	}
	info := after[:at]
	rest = scheme + "://" + after[at+1:]
	u, p, hasPw := strings.Cut(info, ":")
	if user, err = url.PathUnescape(u); err != nil {
		return "", "", "", errors.New("the user name has a '%' that starts no %XX escape: percent-encode special characters (a '%' as %25)")
	}
	if password, err = url.PathUnescape(p); err != nil {
		return "", "", "", errors.New("the password has a '%' that starts no %XX escape: percent-encode special characters of the password (a '%' as %25)")
	}
	if user != "" && !hasPw {
		// Not echoed: what was meant as a user may be a password.
		return "", "", "", fmt.Errorf("the user information has no ':'; write %s://USER:PASSWORD@host, or %s://:PASSWORD@host for the default user",
			scheme, scheme)
	}
	return rest, user, password, nil
}

// parseURL parses a META_URL for this engine. Errors name the problem and
// never contain the password (nor any other user information).
func parseURL(raw string) (*config, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("invalid META_URL %s: %s", redact.URL(raw), fmt.Sprintf(format, args...))
	}
	if !strings.Contains(raw, "://") {
		return nil, bad("missing scheme; want redis://host:port/db, rediss:// or redis+sentinel://")
	}
	hostPart, user, password, err := splitUserinfo(raw)
	if err != nil {
		return nil, bad("%v", err)
	}
	u, err := url.Parse(hostPart)
	if err != nil {
		msg := "not a URL"
		var ue *url.Error
		if errors.As(err, &ue) {
			msg = ue.Err.Error()
		}
		if strings.Contains(msg, "escape") {
			msg = "bad %-escape (percent-encode special characters of the password as %XX)"
		}
		return nil, bad("%s", msg)
	}
	c := &config{scheme: u.Scheme}
	switch u.Scheme {
	case schemeRedis:
	case schemeRediss:
		c.tls = true
	case schemeSentinel:
	case "":
		return nil, bad("missing scheme; want redis://host:port/db, rediss:// or redis+sentinel://")
	default:
		return nil, bad("unsupported scheme %q; want redis://, rediss:// or redis+sentinel://", u.Scheme)
	}
	if u.Opaque != "" {
		return nil, bad("want %s://host:port/db", u.Scheme)
	}
	c.user, c.password = user, password
	if u.Host == "" {
		return nil, bad("missing host")
	}
	port := defaultPort
	if c.scheme == schemeSentinel {
		port = defaultSentinelPort
	}
	hosts := strings.Split(u.Host, ",")
	if len(hosts) > 1 && c.scheme != schemeSentinel {
		return nil, bad("several hosts need redis+sentinel://host:port,host:port/master/db")
	}
	for _, h := range hosts {
		addr, err := hostPort(h, port)
		if err != nil {
			return nil, bad("%v", err)
		}
		c.addrs = append(c.addrs, addr)
	}

	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) == 1 && parts[0] == "" {
		parts = nil
	}
	if c.scheme == schemeSentinel {
		if len(parts) == 0 || parts[0] == "" {
			return nil, bad("missing the master name; want redis+sentinel://host:port,host:port/MASTER/db")
		}
		c.master, parts = parts[0], parts[1:]
	}
	switch len(parts) {
	case 0:
	case 1:
		db, err := strconv.Atoi(parts[0])
		if err != nil || db < 0 {
			return nil, bad("database %q is not a number >= 0", parts[0])
		}
		c.db = db
	default:
		return nil, bad("path %q has too many parts; want /db", u.Path)
	}

	q := u.Query()
	for k, v := range q {
		switch k {
		case "prefix":
			if len(v) != 1 || !prefixRE.MatchString(v[0]) {
				return nil, bad("prefix must be 1-64 characters of A-Z a-z 0-9 . _ : -")
			}
			c.prefix = v[0]
		default:
			return nil, bad("unknown parameter %q (only ?prefix=NAME is supported)", k)
		}
	}
	return c, nil
}

// hostPort validates one host[:port] and adds the default port.
func hostPort(h, defPort string) (string, error) {
	if h == "" {
		return "", errors.New("empty host")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port (or a bare IPv6 address).
		host, port = strings.Trim(h, "[]"), defPort
	}
	if host == "" {
		return "", fmt.Errorf("missing host in %q", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("bad port %q", port)
	}
	return net.JoinHostPort(host, port), nil
}
