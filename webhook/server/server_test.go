package server

import (
	"io"
	"log/slog"
	"testing"

	"github.com/skiff-fs/skiff/webhook/inject"
)

// The server itself runs against a real API server in e2e/ (both
// certificate modes); this checks the configuration rules.
func TestConfigValidate(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ok := Config{Inject: inject.DefaultConfig("x"), CertDir: "/tmp/c", Namespace: "skiff-system", Logger: log}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok.Port != 9443 || ok.Certs != CertsSelf || ok.SecretName == "" || ok.MaxRequestBytes == 0 {
		t.Errorf("defaults not filled: %+v", ok)
	}
	for name, mut := range map[string]func(*Config){
		"no logger":         func(c *Config) { c.Logger = nil },
		"no cert dir":       func(c *Config) { c.CertDir = "" },
		"self no namespace": func(c *Config) { c.Namespace = "" },
		"bad certs":         func(c *Config) { c.Certs = "acme" },
		"bad inject":        func(c *Config) { c.Inject.Image = "" },
	} {
		c := Config{Inject: inject.DefaultConfig("x"), CertDir: "/tmp/c", Namespace: "skiff-system", Logger: log}
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ext := Config{Inject: inject.DefaultConfig("x"), CertDir: "/tmp/c", Certs: CertsExternal, Logger: log}
	if err := ext.Validate(); err != nil {
		t.Errorf("external certificates need no namespace: %v", err)
	}
}
