// Package gcstest starts an in-process fake GCS server
// (github.com/fsouza/fake-gcs-server) for tests that drive the real GCS
// client: the object, chunk and command tests of this module.
//
// Start binds 127.0.0.1 on a free port, sets PublicHost to that address
// (without it every upload fails) and exports STORAGE_EMULATOR_HOST with
// t.Setenv, so tests that use it must not call t.Parallel. Objects live in
// memory and vanish when the test ends. Nothing here is safe to use outside
// tests.
package gcstest
