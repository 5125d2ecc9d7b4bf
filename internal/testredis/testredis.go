package testredis

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Option configures Start.
type Option func(*Server)

// WithPassword makes the server require password (requirepass); URL()
// then carries it.
func WithPassword(password string) Option { return func(s *Server) { s.password = password } }

// WithPersistence turns on the append-only file (appendfsync always), so
// that data survives Stop/Restart.
func WithPersistence() Option { return func(s *Server) { s.persist = true } }

// WithArgs adds raw redis-server arguments, e.g. "--databases", "2".
func WithArgs(args ...string) Option { return func(s *Server) { s.extra = append(s.extra, args...) } }

// Server is one redis-server process owned by a test.
type Server struct {
	dir      string
	port     int
	password string
	persist  bool
	extra    []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	waitCh chan error // receives cmd.Wait's result
	log    string     // path of the server's log
}

// Start starts redis-server on a free port and waits until it answers
// PING. The server is stopped in t.Cleanup.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: run `make test`, which installs it")
	}
	s := &Server{dir: t.TempDir()}
	for _, o := range opts {
		o(s)
	}
	t.Cleanup(s.Stop)
	// A free port can be taken between probing and binding: try again.
	var lastErr error
	for range 5 {
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("testredis: find a free port: %v", err)
		}
		if lastErr = s.start(bin); lastErr == nil {
			return s
		}
	}
	t.Fatalf("testredis: %v", lastErr)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start(bin string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("redis-server on port %d is already running", s.port)
	}
	s.log = filepath.Join(s.dir, "redis.log")
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--logfile", s.log,
	}
	if s.persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if s.password != "" {
		args = append(args, "--requirepass", s.password)
	}
	args = append(args, s.extra...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ok, _ := ping(s.Addr()); ok {
			s.cmd = cmd
			s.waitCh = exited
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server on port %d exited (%v): %s", s.port, err, s.tail())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server on port %d did not answer PING within 10s: %s", s.port, s.tail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping reports whether a Redis server answers at addr. NOAUTH counts as
// up; LOADING does not.
func ping(addr string) (bool, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return false, err
	}
	return strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"), nil
}

func (s *Server) tail() string {
	b, _ := os.ReadFile(s.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// Addr is "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// URL is "redis://[:PASSWORD@]127.0.0.1:PORT/0".
func (s *Server) URL() string { return s.URLDB(0) }

// URLDB is URL for database db.
func (s *Server) URLDB(db int) string {
	auth := ""
	if s.password != "" {
		auth = ":" + s.password + "@"
	}
	return fmt.Sprintf("redis://%s%s/%d", auth, s.Addr(), db)
}

// Stop stops the server (SIGTERM, so an append-only file is flushed;
// SIGKILL after 5s). It is safe to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.waitCh:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.waitCh
	}
	s.cmd, s.waitCh = nil, nil
}

// Kill stops the server with SIGKILL, like a crash.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.waitCh
	s.cmd, s.waitCh = nil, nil
}

// Restart stops the server and starts it again on the same port (data
// survives only WithPersistence).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.StartAgain(); err != nil {
		t.Fatalf("testredis: restart: %v", err)
	}
}

// StartAgain starts a stopped server on its port; for use where t.Fatal
// is not allowed (another goroutine, a hook).
func (s *Server) StartAgain() error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("redis-server not found: run `make test`, which installs it")
	}
	var lastErr error
	for range 20 { // the port may linger briefly
		if lastErr = s.start(bin); lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return lastErr
}

// Pause stops the server with SIGSTOP, like a hung server: connections
// are accepted by the kernel but nothing answers. It is resumed
// (SIGCONT) by the returned function and in t.Cleanup.
func (s *Server) Pause(t testing.TB) (resume func()) {
	t.Helper()
	s.mu.Lock()
	p := s.cmd.Process
	s.mu.Unlock()
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("testredis: pause: %v", err)
	}
	resume = func() { p.Signal(syscall.SIGCONT) }
	t.Cleanup(resume)
	return resume
}
