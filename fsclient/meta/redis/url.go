package redis

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
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

// name is the URL without the password.
func (c *config) name() string {
	var b strings.Builder
	b.WriteString(c.scheme)
	b.WriteString("://")
	if c.user != "" {
		b.WriteString(url.PathEscape(c.user))
		b.WriteString("@")
	}
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

var (
	prefixRE   = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)
	userinfoRE = regexp.MustCompile(`//[^/@]*@`)
)

// redact hides the user information of a URL that did not parse.
func redact(raw string) string { return userinfoRE.ReplaceAllString(raw, "//***@") }

// parseURL parses a META_URL for this engine. Errors name the problem and
// never contain the password.
func parseURL(raw string) (*config, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("invalid META_URL %s: %s", redact(raw), fmt.Sprintf(format, args...))
	}
	if !strings.Contains(raw, "://") {
		return nil, bad("missing scheme; want redis://host:port/db, rediss:// or redis+sentinel://")
	}
	u, err := url.Parse(raw)
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
	if u.User != nil {
		c.user = u.User.Username()
		c.password, _ = u.User.Password()
		if c.user != "" && c.password == "" {
			return nil, bad("user %q has no password; write %s://%s:PASSWORD@host, or %s://:PASSWORD@host for the default user",
				c.user, u.Scheme, c.user, u.Scheme)
		}
	}
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
