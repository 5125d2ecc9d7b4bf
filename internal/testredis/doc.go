// Package testredis starts a real redis-server for a test: on a free
// port, in t.TempDir(), stopped in t.Cleanup. It does not depend on any
// Redis client library (it speaks just enough RESP to wait for PING).
//
// redis-server must be on PATH; `make test` installs it. A missing binary
// fails the test: tests never skip for lack of a server.
package testredis
