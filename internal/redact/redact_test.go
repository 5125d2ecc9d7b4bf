package redact

import "testing"

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"redis://host:6379/1", "redis://host:6379/1"},
		{"redis://:pw@host:6379/1", "redis://***@host:6379/1"},
		{"redis://user:p@ss/w#r?d@host/0?prefix=a", "redis://***@host/0?prefix=a"},
		{"redis+sentinel://:x:y@a:1,b:2/m/0", "redis+sentinel://***@a:1,b:2/m/0"},
		{"bolt:///var/lib/x.db", "bolt:///var/lib/x.db"},
		{":secret@host", "***@host"},
		{"", ""},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSecrets(t *testing.T) {
	u := "redis://:s3/cr#t@host:1/0"
	for _, tc := range []struct{ in, want string }{
		{"dial " + u + ": refused", "dial ***: refused"},
		{"auth s3/cr#t failed", "auth *** failed"},
		{"escaped s3%2Fcr%23t", "escaped ***"},
		{"nothing here", "nothing here"},
	} {
		got := Secrets(tc.in, u, "")
		if got != tc.want {
			t.Errorf("Secrets(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
