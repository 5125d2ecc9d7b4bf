package gcs_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/object/gcs"
	"github.com/skiff-fs/skiff/fsclient/object/gcs/gcstest"
	"github.com/skiff-fs/skiff/fsclient/object/objecttest"
)

func writeJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "google-credentials.json")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestCredentialsFileWithEmulator checks that a credentials file does not
// stop STORAGE_EMULATOR_HOST from working: the library must not try to get
// a token (its token URI here is unreachable).
func TestCredentialsFileWithEmulator(t *testing.T) {
	gcstest.Start(t, "creds")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := writeJSON(t, map[string]string{
		"type":           "service_account",
		"project_id":     "p",
		"private_key_id": "k1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "skiff@p.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      "http://127.0.0.1:1/token",
	})
	s := newStore(t, gcs.Config{Bucket: "creds", CredentialsFile: f})
	objecttest.Put(t, s, "x", []byte("y"))
}

func TestCredentialsFileErrors(t *testing.T) {
	gcstest.Start(t, "creds")
	notJSON := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(notJSON, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, want string }{
		{notJSON, "not a JSON credentials file"},
		{writeJSON(t, map[string]string{"type": "api_key"}), `unsupported type "api_key"`},
		{"/nonexistent/creds.json", "no such file"},
	} {
		_, err := gcs.New(context.Background(), gcs.Config{Bucket: "creds", CredentialsFile: tc.file})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New with credentials %s: %v, want an error containing %q", tc.file, err, tc.want)
		}
	}
}
