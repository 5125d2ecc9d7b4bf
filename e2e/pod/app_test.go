package pod

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// appCommand makes the test binary an application process that streams
// one file through the mount (run inside an app container by startIn):
//
//	__app write PATH SIZE HOLD   write SIZE random bytes, close
//	__app read PATH HOLD         read to the end
//
// It prints "progress N" every 8 MiB and, once HOLD bytes are done
// (before writing or reading further, or before closing), prints "hold"
// and waits for a line on its standard input: the test does something
// to the sidecar while the stream is certainly not finished. At the end
// it prints "done SIZE SHA256" and exits 0; any error is printed and
// exits 1.
const appCommand = "__app"

func appMain(args []string) int {
	if err := app(args); err != nil {
		fmt.Printf("error: %v\n", err)
		return 1
	}
	return 0
}

const appChunk = 1 << 20

func app(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("usage: %s write PATH SIZE HOLD | read PATH HOLD", appCommand)
	}
	num := func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }
	in := bufio.NewReader(os.Stdin)
	var done int64
	lastReport := int64(-1)
	held := false
	step := func(hold int64) error {
		if done/(8<<20) != lastReport {
			lastReport = done / (8 << 20)
			fmt.Printf("progress %d\n", done)
		}
		if !held && done >= hold {
			held = true
			fmt.Println("hold")
			if _, err := in.ReadString('\n'); err != nil {
				return fmt.Errorf("waiting on stdin: %w", err)
			}
		}
		return nil
	}
	h := sha256.New()
	switch args[0] {
	case "write":
		if len(args) != 4 {
			return errors.New("write PATH SIZE HOLD")
		}
		size, err := num(args[2])
		if err != nil {
			return err
		}
		hold, err := num(args[3])
		if err != nil {
			return err
		}
		f, err := os.Create(args[1])
		if err != nil {
			return err
		}
		rng := rand.NewChaCha8([32]byte(sha256.Sum256([]byte(fmt.Sprint(time.Now().UnixNano())))))
		buf := make([]byte, appChunk)
		for done < size {
			if err := step(hold); err != nil {
				f.Close()
				return err
			}
			n := min(int64(len(buf)), size-done, max(hold-done, 0))
			if n == 0 {
				n = min(int64(len(buf)), size-done)
			}
			rng.Read(buf[:n])
			h.Write(buf[:n])
			if _, err := f.Write(buf[:n]); err != nil {
				f.Close()
				return fmt.Errorf("write at %d: %w", done, err)
			}
			done += n
		}
		if err := step(hold); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close: %w", err)
		}
	case "read":
		hold, err := num(args[2])
		if err != nil {
			return err
		}
		f, err := os.Open(args[1])
		if err != nil {
			return err
		}
		defer f.Close()
		// Drop the file's pages from the page cache: the data must come
		// through the file system.
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			return fmt.Errorf("fadvise: %w", err)
		}
		if err := readAll(f, h, &done, hold, step); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown %q", args[0])
	}
	fmt.Printf("done %d %s\n", done, hex.EncodeToString(h.Sum(nil)))
	return nil
}

func readAll(f *os.File, h hash.Hash, done *int64, hold int64, step func(int64) error) error {
	buf := make([]byte, appChunk)
	for {
		if err := step(hold); err != nil {
			return err
		}
		want := int64(len(buf))
		if !(*done >= hold) {
			want = min(want, hold-*done)
		}
		n, err := f.Read(buf[:want])
		h.Write(buf[:n])
		*done += int64(n)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read at %d: %w", *done, err)
		}
	}
}

// streamResult is what an app stream printed at its end.
type streamResult struct {
	size int64
	sum  string
}

// appStream is a running __app process.
type appStream struct {
	*proc
	stdin *os.File
}

// startStream starts __app args in the app container's mount namespace
// (nsenter), as another process of the app.
func (p *miniPod) startStream(app *proc, name string, args ...string) *appStream {
	self, err := os.Executable()
	if err != nil {
		p.t.Fatal(err)
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		p.t.Fatalf("the supervised pod test runs app processes in the app's mount namespace with nsenter (util-linux): %v", err)
	}
	cmd := exec.Command(nsenter, append([]string{"-t", strconv.Itoa(app.cmd.Process.Pid), "-m", "--", self, appCommand}, args...)...)
	// An os.Pipe, not an io.Pipe: the child reads it directly, so no
	// copying goroutine keeps cmd.Wait waiting.
	pr, pw, err := os.Pipe()
	if err != nil {
		p.t.Fatal(err)
	}
	cmd.Stdin = pr
	pc := startCmd(p.t, name, cmd)
	pr.Close()
	p.t.Cleanup(func() { pw.Close() })
	return &appStream{proc: pc, stdin: pw}
}

// progress is the last progress the stream printed.
func (a *appStream) progress() int64 {
	var n int64
	for _, l := range strings.Split(a.out.String(), "\n") {
		if v, ok := strings.CutPrefix(l, "progress "); ok {
			n, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return n
}

// waitProgress waits until the stream has done at least n bytes.
func (a *appStream) waitProgress(t *testing.T, n int64, d time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s at %d bytes", a.name, n), d, func() bool {
		select {
		case <-a.done:
			t.Fatalf("%s exited early: %v\n%s", a.name, a.err, a.out.String())
		default:
		}
		return a.progress() >= n || strings.Contains(a.out.String(), "hold\n")
	})
}

// waitHold waits until the stream holds.
func (a *appStream) waitHold(t *testing.T, d time.Duration) {
	t.Helper()
	waitFor(t, a.name+" holding", d, func() bool {
		select {
		case <-a.done:
			t.Fatalf("%s exited early: %v\n%s", a.name, a.err, a.out.String())
		default:
		}
		return strings.Contains(a.out.String(), "hold\n")
	})
}

// release lets the stream go on after its hold.
func (a *appStream) release(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(a.stdin, "go\n"); err != nil {
		t.Fatalf("%s: %v", a.name, err)
	}
}

// result waits for the stream's end and returns what it printed; the
// stream must have succeeded.
func (a *appStream) result(t *testing.T, d time.Duration) streamResult {
	t.Helper()
	if code := a.wait(t, d); code != 0 {
		t.Fatalf("%s failed (exit %d):\n%s", a.name, code, a.out.String())
	}
	var r streamResult
	for _, l := range strings.Split(a.out.String(), "\n") {
		if v, ok := strings.CutPrefix(l, "done "); ok {
			if _, err := fmt.Sscanf(v, "%d %s", &r.size, &r.sum); err != nil {
				t.Fatalf("%s: %q: %v", a.name, l, err)
			}
			return r
		}
	}
	t.Fatalf("%s printed no result:\n%s", a.name, a.out.String())
	return r
}
