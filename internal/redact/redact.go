package redact

import (
	"net/url"
	"sort"
	"strings"
)

// Mask replaces what redaction removes.
const Mask = "***"

// URL returns s with its user information (from "://" to the last "@")
// replaced by Mask. s need not be a valid URL.
func URL(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	return s[:start] + Mask + s[at:]
}

// Password returns the password of a URL by the same rule as URL: the
// part of the user information after its first ":" (the whole user
// information when it has no ":"), or "" when s has none.
func Password(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return ""
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	info := s[start:at]
	if _, pw, ok := strings.Cut(info, ":"); ok {
		return pw
	}
	return info
}

// Secrets returns s with every occurrence of each non-empty secret
// replaced by Mask, along with the secrets' URL-escaped and unescaped
// forms and, for secrets that are URLs, their passwords: a child process
// may print a META_URL, or its password alone, in any of these forms.
// Longer secrets are replaced first.
func Secrets(s string, secrets ...string) string {
	var all []string
	add := func(v string) {
		if v != "" {
			all = append(all, v)
		}
	}
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		add(sec)
		if pw := Password(sec); pw != "" {
			add(pw)
			add(url.QueryEscape(pw))
			add(url.PathEscape(pw))
			if u, err := url.PathUnescape(pw); err == nil {
				add(u)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return len(all[i]) > len(all[j]) })
	for _, v := range all {
		if v == Mask || len(v) < 2 {
			continue
		}
		s = strings.ReplaceAll(s, v, Mask)
	}
	return s
}
