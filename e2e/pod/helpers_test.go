package pod

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/sidecar/contract"

	"github.com/skiff-fs/skiff/internal/syncbuf"
)

// The test binary doubles as the container runtime: run with envNS set,
// it sets up the mounts of one container in the new mount namespace it
// was started in (CLONE_NEWNS) and execs the container's command.
const (
	envNS   = "SKIFF_E2E_NS"   // "bidirectional" or "host-to-container"
	envSrc  = "SKIFF_E2E_SRC"  // the emptyDir on the "host"
	envDst  = "SKIFF_E2E_DST"  // where the container sees it
	envExec = "SKIFF_E2E_EXEC" // the command, a JSON list
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == appCommand {
		os.Exit(appMain(os.Args[2:]))
	}
	if mode := os.Getenv(envNS); mode != "" {
		if err := container(mode); err != nil {
			fmt.Fprintf(os.Stderr, "container setup: %v\n", err)
			os.Exit(111)
		}
	}
	code := m.Run()
	for _, d := range []string{binDir, skiffDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

// container does what the kubelet and the runtime do for a volume mount
// with mountPropagation Bidirectional (rshared bind) or HostToContainer
// (rslave root and rslave bind), then execs the command.
func container(mode string) error {
	src, dst := os.Getenv(envSrc), os.Getenv(envDst)
	var argv []string
	if err := json.Unmarshal([]byte(os.Getenv(envExec)), &argv); err != nil {
		return err
	}
	switch mode {
	case "bidirectional":
		// The copy of src in this namespace is a peer of the host's
		// (a shared mount, copied by CLONE_NEWNS); a bind of it joins
		// the same peer group.
	case "host-to-container":
		if err := syscall.Mount("", "/", "", syscall.MS_SLAVE|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("make / rslave: %w", err)
		}
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(src, dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	prop := uintptr(syscall.MS_SHARED)
	if mode == "host-to-container" {
		prop = syscall.MS_SLAVE
	}
	if err := syscall.Mount("", dst, "", prop|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("propagation of %s: %w", dst, err)
	}
	env := make([]string, 0, len(os.Environ()))
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SKIFF_E2E_") {
			env = append(env, e)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, env)
}

// sharedDir makes dir the "host" side of an emptyDir: a mount of its
// own in a peer group (shared), as the kubelet's directory is.
func sharedDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("", dir, "", syscall.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Every mount stacked on dir, then dir itself.
		for range 8 {
			if syscall.Unmount(dir, syscall.MNT_DETACH) != nil {
				break
			}
		}
	})
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// sidecarBinary builds cmd/skiff-sidecar (once per test binary).
func sidecarBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "skiff-e2e-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir, "./cmd/skiff-sidecar")
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/skiff-sidecar: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "skiff-sidecar")
}

var (
	skiffOnce              sync.Once
	skiffV1, skiffV2       string
	skiffDir               string
	skiffBuildErr          error
	skiffV1Ver, skiffV2Ver = "e2e-v1", "e2e-v2"
)

// skiffBinaries builds cmd/skiff twice (once per test binary), with the
// versions skiffV1Ver and skiffV2Ver: the worker before and after an
// upgrade.
func skiffBinaries(t *testing.T) (v1, v2 string) {
	t.Helper()
	skiffOnce.Do(func() {
		skiffDir, skiffBuildErr = os.MkdirTemp("", "skiff-e2e-skiff-")
		if skiffBuildErr != nil {
			return
		}
		for _, b := range []struct{ ver, dir string }{{skiffV1Ver, "v1"}, {skiffV2Ver, "v2"}} {
			out := filepath.Join(skiffDir, b.dir, "skiff")
			cmd := exec.Command("go", "build", "-o", out, "-ldflags", "-X main.version="+b.ver, "./cmd/skiff")
			cmd.Dir = "../.."
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if o, err := cmd.CombinedOutput(); err != nil {
				skiffBuildErr = fmt.Errorf("go build ./cmd/skiff (%s): %v\n%s", b.ver, err, o)
				return
			}
		}
		skiffV1, skiffV2 = filepath.Join(skiffDir, "v1", "skiff"), filepath.Join(skiffDir, "v2", "skiff")
	})
	if skiffBuildErr != nil {
		t.Fatal(skiffBuildErr)
	}
	return skiffV1, skiffV2
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a started process with its output kept for the log.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
	err  error
}

// startIn starts argv in a new mount namespace set up as a container
// with the emptyDir src seen at dst.
func startIn(t *testing.T, name, mode, src, dst string, env []string, argv ...string) *proc {
	t.Helper()
	return startCmd(t, name, containerCmd(t, mode, src, dst, env, argv...))
}

// containerCmd is the command startIn starts.
func containerCmd(t *testing.T, mode, src, dst string, env []string, argv ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ex, _ := json.Marshal(argv)
	cmd := exec.Command(self)
	cmd.Env = append(append(os.Environ(), env...), envNS+"="+mode, envSrc+"="+src, envDst+"="+dst, envExec+"="+string(ex))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	return cmd
}

func startCmd(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", name, p.out.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s", p.name, d)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitReady polls the sidecar's /readyz until 200.
func waitReady(t *testing.T, port int, p *proc, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	url := "http://127.0.0.1:" + strconv.Itoa(port) + contract.PathReady
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before it was ready", p.name, p.err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = resp.Status + " " + string(b)
			if resp.StatusCode == http.StatusOK {
				cancel()
				return
			}
		} else {
			last = err.Error()
		}
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready within %s: %s", p.name, d, last)
}

// fuseMountsIn lists the FUSE mounts of process pid's mount namespace
// on path.
func fuseMountsIn(t *testing.T, pid int, path string) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == path && strings.Contains(line, " - fuse") {
			out = append(out, line)
		}
	}
	return out
}
