package gcstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// EnvHost is the environment variable that points the GCS client library
// at an emulator.
const EnvHost = "STORAGE_EMULATOR_HOST"

// Start starts a fake GCS server on a free port of 127.0.0.1, creates the
// given buckets, sets STORAGE_EMULATOR_HOST to the server with t.Setenv
// (so neither the test nor its ancestors may be parallel) and stops the
// server in t.Cleanup. It returns the server's "127.0.0.1:PORT". Objects
// live in memory.
func Start(t testing.TB, buckets ...string) (hostPort string) {
	t.Helper()
	var srv *fakestorage.Server
	var err error
	// The port is free when picked but may be taken before the server
	// binds it; try a few.
	for range 5 {
		var port uint16
		port, err = freePort()
		if err != nil {
			break
		}
		hostPort = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
		srv, err = fakestorage.NewServerWithOptions(fakestorage.Options{
			Scheme: "http",
			Host:   "127.0.0.1",
			Port:   port,
			// Without PublicHost every upload fails with "object doesn't
			// exist" (see /work/shared/notes/gcs-emulator.md).
			PublicHost: hostPort,
			Writer:     io.Discard,
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("gcstest: start fake GCS server: %v", err)
	}
	t.Cleanup(srv.Stop)
	t.Setenv(EnvHost, hostPort)
	for _, b := range buckets {
		CreateBucket(t, hostPort, b)
	}
	return hostPort
}

func freePort() (uint16, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port), nil
}

// CreateBucket creates a bucket on the fake server at hostPort through the
// JSON API.
func CreateBucket(t testing.TB, hostPort, bucket string) {
	t.Helper()
	body, err := json.Marshal(map[string]string{"name": bucket})
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s/storage/v1/b?project=test", hostPort)
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("gcstest: create bucket %q: %v", bucket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("gcstest: create bucket %q: %s: %s", bucket, resp.Status, msg)
	}
}
