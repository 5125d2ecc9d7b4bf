package gcs_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/object/gcs"
)

func TestCheckCredentials(t *testing.T) {
	const sts = "https://sts.googleapis.com/v1/token"
	token := "/var/run/secrets/tokens/gcp-token"
	ext := func(mod func(m map[string]any)) map[string]any {
		m := map[string]any{
			"type":               "external_account",
			"audience":           "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
			"subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
			"token_url":          sts,
			"credential_source":  map[string]any{"file": token},
		}
		if mod != nil {
			mod(m)
		}
		return m
	}
	sa := map[string]any{"type": "service_account", "private_key": "k", "client_email": "a@b", "token_uri": "https://oauth2.googleapis.com/token"}
	for _, tc := range []struct {
		name string
		cred any
		want string // "" = accepted
	}{
		{"service account", sa, ""},
		{"service account no token_uri", map[string]any{"type": "service_account"}, ""},
		{"service account other token_uri", map[string]any{"type": "service_account", "token_uri": "http://127.0.0.1:1/token"}, "token_uri must be Google's"},
		{"authorized user", map[string]any{"type": "authorized_user", "refresh_token": "r"}, ""},
		{"authorized user other token_uri", map[string]any{"type": "authorized_user", "token_uri": "https://evil.example/token"}, "token_uri must be Google's"},
		{"external account", ext(nil), ""},
		{"external /run/secrets", ext(func(m map[string]any) { m["credential_source"] = map[string]any{"file": "/run/secrets/t"} }), ""},
		{"external impersonation", ext(func(m map[string]any) {
			m["service_account_impersonation_url"] = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b:generateAccessToken"
		}), ""},
		{"external other token_url", ext(func(m map[string]any) { m["token_url"] = "https://evil.example/v1/token" }), "token_url must be exactly"},
		{"external sts http", ext(func(m map[string]any) { m["token_url"] = "http://sts.googleapis.com/v1/token" }), "token_url must be exactly"},
		{"external other file", ext(func(m map[string]any) { m["credential_source"] = map[string]any{"file": "/etc/shadow"} }), "credential_source.file must be"},
		{"external dotdot", ext(func(m map[string]any) {
			m["credential_source"] = map[string]any{"file": "/var/run/secrets/../../etc/shadow"}
		}), "credential_source.file must be"},
		{"external relative", ext(func(m map[string]any) { m["credential_source"] = map[string]any{"file": "var/run/secrets/x"} }), "credential_source.file must be"},
		{"external url", ext(func(m map[string]any) { m["credential_source"] = map[string]any{"url": "http://169.254.169.254/token"} }), "credential_source.url"},
		{"external url and file", ext(func(m map[string]any) { m["credential_source"] = map[string]any{"file": token, "url": "http://x"} }), "credential_source.url"},
		{"external executable", ext(func(m map[string]any) {
			m["credential_source"] = map[string]any{"executable": map[string]any{"command": "/bin/sh -c id"}}
		}), "executable"},
		{"external aws", ext(func(m map[string]any) {
			m["credential_source"] = map[string]any{"environment_id": "aws1", "region_url": "http://x"}
		}), "environment"},
		{"external no source", ext(func(m map[string]any) { delete(m, "credential_source") }), "credential_source"},
		{"external token_info_url", ext(func(m map[string]any) { m["token_info_url"] = "https://evil.example/" }), "token_info_url"},
		{"external bad impersonation", ext(func(m map[string]any) { m["service_account_impersonation_url"] = "https://evil.example/x" }), "iamcredentials"},
		{"impersonated", map[string]any{"type": "impersonated_service_account",
			"service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b:generateAccessToken",
			"source_credentials":                sa}, ""},
		{"impersonated bad source", map[string]any{"type": "impersonated_service_account",
			"service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/x",
			"source_credentials":                ext(func(m map[string]any) { m["token_url"] = "http://127.0.0.1/" })}, "source_credentials: external_account token_url"},
		{"impersonated bad url", map[string]any{"type": "impersonated_service_account",
			"service_account_impersonation_url": "https://127.0.0.1/x", "source_credentials": sa}, "iamcredentials"},
		{"impersonated twice", map[string]any{"type": "impersonated_service_account",
			"service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/x",
			"source_credentials": map[string]any{"type": "impersonated_service_account",
				"service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/x", "source_credentials": sa}}, "not be impersonated again"},
		{"impersonated no source", map[string]any{"type": "impersonated_service_account",
			"service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/x"}, "needs source_credentials"},
		{"api key", map[string]any{"type": "api_key"}, "type must be"},
		{"gdch", map[string]any{"type": "gdch_service_account", "token_uri": "https://evil.example"}, "type must be"},
		{"not json", "{", "not a JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			if s, ok := tc.cred.(string); ok {
				b = []byte(s)
			} else {
				b, _ = json.Marshal(tc.cred)
			}
			err := gcs.CheckCredentials(b)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			case err != nil && (strings.Contains(err.Error(), "evil") || strings.Contains(err.Error(), "shadow") || strings.Contains(err.Error(), "127.0.0.1") || strings.Contains(err.Error(), "\n")):
				t.Errorf("error quotes the file's contents or spans lines: %v", err)
			}
		})
	}
}

// TestRestrictedRefusesHostileExternalAccount is issue #12's attack: an
// external_account file that makes the client read a file of the
// author's choosing and send it to a token server of the author's
// choosing. Restricted, New refuses it and the token server hears
// nothing; unrestricted (for contrast), the server receives the file.
func TestRestrictedRefusesHostileExternalAccount(t *testing.T) {
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	var hits atomic.Int64
	var leaked atomic.Bool
	const secret = "node-secret-contents"
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		r.ParseForm()
		if strings.Contains(r.Form.Get("subject_token"), secret) {
			leaked.Store(true)
		}
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer tokens.Close()
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer storage.Close()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	f := writeJSON(t, map[string]any{
		"type":               "external_account",
		"audience":           "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
		"subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
		"token_url":          tokens.URL + "/v1/token",
		"credential_source":  map[string]any{"file": victim},
	})
	ctx := context.Background()
	cfg := gcs.Config{Bucket: "bkt", CredentialsFile: f, Endpoint: storage.URL + "/storage/v1/", MaxAttempts: 1, Restricted: true}
	_, err := gcs.New(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "token_url must be exactly") {
		t.Errorf("restricted New: %v, want a refusal of the token_url", err)
	}
	if strings.Contains(err.Error(), tokens.URL) || strings.Contains(err.Error(), victim) {
		t.Errorf("the refusal quotes the file: %v", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the token server received %d requests (file sent: %v)", n, leaked.Load())
	}
	// Unrestricted, the same file does reach the token server: the
	// attack is real, and this test would see it.
	cfg.Restricted = false
	if _, err := gcs.New(ctx, cfg); err == nil {
		t.Error("unrestricted New with a failing token server succeeded")
	}
	if hits.Load() == 0 || !leaked.Load() {
		t.Errorf("unrestricted: token server hits %d, file sent %v; want the attack to reach it", hits.Load(), leaked.Load())
	}
}
