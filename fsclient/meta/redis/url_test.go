package redis

import (
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/internal/testsecret"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url  string
		want *config
		name string // Name() of the parsed URL
	}{
		{"redis://127.0.0.1:6379/1", &config{scheme: "redis", addrs: []string{"127.0.0.1:6379"}, db: 1}, "redis://127.0.0.1:6379/1"},
		{"redis://host", &config{scheme: "redis", addrs: []string{"host:6379"}}, "redis://host:6379/0"},
		{"redis://host/", &config{scheme: "redis", addrs: []string{"host:6379"}}, "redis://host:6379/0"},
		{"redis://:s3cret@host:7000/2?prefix=vol1", &config{scheme: "redis", addrs: []string{"host:7000"}, password: "s3cret", db: 2, prefix: "vol1"},
			"redis://host:7000/2?prefix=vol1"},
		{"redis://alice:p%40ss@host/3", &config{scheme: "redis", addrs: []string{"host:6379"}, user: "alice", password: "p@ss", db: 3},
			"redis://host:6379/3"},
		{"rediss://:pw@redis.example.com:6380/0", &config{scheme: "rediss", addrs: []string{"redis.example.com:6380"}, password: "pw", tls: true},
			"rediss://redis.example.com:6380/0"},
		{"redis://[::1]:6379/4", &config{scheme: "redis", addrs: []string{"[::1]:6379"}, db: 4}, "redis://[::1]:6379/4"},
		{"redis+sentinel://:pw@s1:26379,s2,s3:26380/mymaster/5?prefix=a.b-c_d:e",
			&config{scheme: "redis+sentinel", addrs: []string{"s1:26379", "s2:26379", "s3:26380"}, master: "mymaster", password: "pw", db: 5, prefix: "a.b-c_d:e"},
			"redis+sentinel://s1:26379,s2:26379,s3:26380/mymaster/5?prefix=a.b-c_d:e"},
		{"redis+sentinel://s1/mymaster", &config{scheme: "redis+sentinel", addrs: []string{"s1:26379"}, master: "mymaster"},
			"redis+sentinel://s1:26379/mymaster/0"},
	}
	for _, tc := range tests {
		got, err := parseURL(tc.url)
		if err != nil {
			t.Errorf("parseURL(%q): %v", tc.url, err)
			continue
		}
		if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(config{})); d != "" {
			t.Errorf("parseURL(%q) (-want +got):\n%s", tc.url, d)
		}
		if n := got.name(); n != tc.name {
			t.Errorf("name of %q = %q, want %q", tc.url, n, tc.name)
		}
	}
}

func TestParseURLTag(t *testing.T) {
	for url, want := range map[string]string{
		"redis://h/0":            "{skiff}",
		"redis://h/0?prefix=vol": "{vol}",
	} {
		c, err := parseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		if c.tag() != want {
			t.Errorf("tag of %q = %q, want %q", url, c.tag(), want)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	tests := []struct{ url, want string }{
		{"", "missing scheme"},
		{"127.0.0.1:6379", "missing scheme"},
		{"http://h/0", `unsupported scheme "http"`},
		{"redis:///0", "missing host"},
		{"redis://h/abc", `database "abc" is not a number`},
		{"redis://h/-1", `database "-1" is not a number`},
		{"redis://h/0/1", "too many parts"},
		{"redis://h:abc/0", "invalid port"},
		{"redis://h:70000/0", `bad port "70000"`},
		{"redis://a:1,b:2/0", "redis+sentinel://"},
		{"redis://h/0?prefix=", "prefix must be"},
		{"redis://h/0?prefix={x}", "prefix must be"},
		{"redis://h/0?prefix=a*b", "prefix must be"},
		{"redis://h/0?db=1", `unknown parameter "db"`},
		{"redis://alice@h/0", `has no ':'`},
		{"redis+sentinel://s1:26379/", "missing the master name"},
		{"redis+sentinel://s1:26379", "missing the master name"},
		{"redis+sentinel://s1:26379/m/x", `database "x"`},
		{"redis://:pa%zzss@h/0", "percent-encode"},
	}
	for _, tc := range tests {
		_, err := parseURL(tc.url)
		if err == nil {
			t.Errorf("parseURL(%q) succeeded, want an error about %q", tc.url, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseURL(%q) = %q, want it to mention %q", tc.url, err, tc.want)
		}
		if strings.Contains(tc.url, "pa%zzss") && strings.Contains(err.Error(), "pa") && strings.Contains(err.Error(), "zz") {
			t.Errorf("error %q shows the password", err)
		}
	}
}

func TestGlobEscape(t *testing.T) {
	if got, want := globEscape(`{v}a*b?c[d]e\f`), `{v}a\*b\?c\[d\]e\\f`; got != want {
		t.Errorf("globEscape = %q, want %q", got, want)
	}
}

// TestParseURLHostilePasswords parses META_URLs whose passwords hold
// "/ # ? @ % :" unescaped: either they parse to the exact password, or the
// error holds no piece of it; Name never does.
func TestParseURLHostilePasswords(t *testing.T) {
	r := testsecret.Rand(t)
	for i := 0; i < 200; i++ {
		pw := testsecret.Password(r, 20+r.IntN(20))
		for _, raw := range []string{
			"redis://:" + pw + "@127.0.0.1:6379/0",
			"redis://alice:" + pw + "@h/1?prefix=v",
			"redis+sentinel://:" + pw + "@s1,s2:26380/m/0",
			"redis://:" + url.PathEscape(pw) + "@h/0",
		} {
			c, err := parseURL(raw)
			if err != nil {
				testsecret.Check(t, "parse error", err.Error(), pw)
				if !strings.Contains(err.Error(), "percent-encode") {
					t.Errorf("parseURL: %v, want a hint to percent-encode", err)
				}
				continue
			}
			if strings.Contains(raw, url.PathEscape(pw)) && c.password != pw {
				t.Errorf("escaped password parsed wrong")
			}
			testsecret.Check(t, "Name()", c.name(), pw)
		}
	}
}
