package fusetest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const childEnv = "SKIFF_FUSETEST_AS"

// Main runs the test binary: as a child started by As it performs one
// operation and exits; otherwise it runs the tests. Call it from TestMain:
//
//	func TestMain(m *testing.M) { fusetest.Main(m) }
func Main(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		args := os.Args
		for i, a := range args {
			if a == "--" {
				args = args[i+1:]
				break
			}
		}
		fmt.Print(Do(args...))
		os.Exit(0)
	}
	code := m.Run()
	bin.Lock()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	bin.Unlock()
	os.Exit(code)
}

// bin is a copy of the test binary that every user may run (the go tool
// builds it in a 0700 directory).
var bin struct {
	sync.Mutex
	dir, path string
}

func childBinary(t testing.TB) string {
	bin.Lock()
	defer bin.Unlock()
	if bin.path != "" {
		return bin.path
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "fusetest-bin-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	dst := filepath.Join(dir, "test.bin")
	in, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	bin.dir, bin.path = dir, dst
	return dst
}

// As performs one operation (see Do) as user uid with groups gids
// (gids[0] is the primary group) in a child process, and returns Do's
// result: "0" (and any output) on success, else the errno's name.
func As(t testing.TB, uid uint32, gids []uint32, op string, args ...string) string {
	t.Helper()
	cmd := exec.Command(childBinary(t), append([]string{"-test.run=^$", "--", op}, args...)...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Dir = "/"
	cred := &syscall.Credential{Uid: uid, Gid: gids[0], Groups: gids[1:]}
	if len(gids) == 1 {
		cred.Groups = []uint32{}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s %v as uid %d: %v: %s", op, args, uid, err, out)
	}
	return string(out)
}

// Do performs one file operation, as pjdfstest's fstest does, and returns
// "0" (followed by a space and the output for read, readdir, stat,
// getxattr) or the name of the errno (e.g. "EACCES").
//
//	open PATH FLAGS [MODE]        FLAGS: O_RDONLY,O_CREAT,... (opened and closed)
//	create PATH MODE              O_CREAT|O_EXCL|O_WRONLY
//	mkdir PATH MODE | rmdir PATH | unlink PATH | mkfifo PATH MODE
//	mknod PATH c|b|s MODE MAJOR MINOR
//	rename FROM TO | link FROM TO | symlink TARGET PATH
//	chmod PATH MODE | chown PATH UID GID | lchown PATH UID GID
//	truncate PATH LEN | ftruncate PATH LEN   (ftruncate opens O_WRONLY)
//	write PATH DATA (O_WRONLY, at 0) | append PATH DATA | read PATH
//	utimens PATH ATIME MTIME      seconds, or "now" / "omit"
//	access PATH MASK              MASK: r,w,x combined, or f
//	setxattr PATH NAME VALUE | getxattr PATH NAME | readdir PATH | stat PATH
//	create-ftruncate PATH LEN     open(O_CREAT|O_RDWR, mode 0), then ftruncate
//	flock PATH                    LOCK_EX|LOCK_NB on a new descriptor
//	setlk|setlkw|getlk PATH r|w   whole-file POSIX lock (getlk prints r, w or u)
//	renameat2 FROM TO noreplace|exchange
func Do(args ...string) string {
	if len(args) == 0 {
		return "EINVAL"
	}
	out, err := do(args[0], args[1:])
	if err != nil {
		var en syscall.Errno
		if errors.As(err, &en) {
			return unix.ErrnoName(en)
		}
		return "ERROR " + err.Error()
	}
	if out != "" {
		return "0 " + out
	}
	return "0"
}

// num parses a number (0x, 0 prefixes allowed; negative ones wrap).
func num(s string) uint64 {
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		panic(fmt.Sprintf("fusetest: bad number %q", s))
	}
	return uint64(n)
}

var openFlags = map[string]int{
	"O_RDONLY": os.O_RDONLY, "O_WRONLY": os.O_WRONLY, "O_RDWR": os.O_RDWR, "O_CREAT": os.O_CREATE,
	"O_EXCL": os.O_EXCL, "O_TRUNC": os.O_TRUNC, "O_APPEND": os.O_APPEND, "O_NOFOLLOW": syscall.O_NOFOLLOW,
	"O_DIRECTORY": syscall.O_DIRECTORY, "O_NONBLOCK": syscall.O_NONBLOCK,
}

func do(op string, a []string) (string, error) {
	need := func(n int) {
		if len(a) < n {
			panic(fmt.Sprintf("fusetest: %s needs %d arguments", op, n))
		}
	}
	switch op {
	case "open":
		need(2)
		flags := 0
		for _, f := range strings.Split(a[1], ",") {
			v, ok := openFlags[f]
			if !ok {
				panic("fusetest: unknown open flag " + f)
			}
			flags |= v
		}
		mode := uint64(0o644)
		if len(a) > 2 {
			mode = num(a[2])
		}
		fd, err := syscall.Open(a[0], flags, uint32(mode))
		if err != nil {
			return "", err
		}
		return "", syscall.Close(fd)
	case "create":
		need(2)
		fd, err := syscall.Open(a[0], os.O_CREATE|os.O_EXCL|os.O_WRONLY, uint32(num(a[1])))
		if err != nil {
			return "", err
		}
		return "", syscall.Close(fd)
	case "mkdir":
		need(2)
		return "", syscall.Mkdir(a[0], uint32(num(a[1])))
	case "rmdir":
		need(1)
		return "", syscall.Rmdir(a[0])
	case "unlink":
		need(1)
		return "", syscall.Unlink(a[0])
	case "mkfifo":
		need(2)
		return "", syscall.Mkfifo(a[0], uint32(num(a[1])))
	case "mknod":
		need(5)
		typ := map[string]uint32{"c": syscall.S_IFCHR, "b": syscall.S_IFBLK, "s": syscall.S_IFSOCK, "f": syscall.S_IFIFO}[a[1]]
		return "", syscall.Mknod(a[0], typ|uint32(num(a[2])), int(unix.Mkdev(uint32(num(a[3])), uint32(num(a[4])))))
	case "rename":
		need(2)
		return "", syscall.Rename(a[0], a[1])
	case "link":
		need(2)
		return "", syscall.Link(a[0], a[1])
	case "symlink":
		need(2)
		return "", syscall.Symlink(a[0], a[1])
	case "chmod":
		need(2)
		return "", syscall.Chmod(a[0], uint32(num(a[1])))
	case "chown":
		need(3)
		return "", syscall.Chown(a[0], int(int32(num(a[1]))), int(int32(num(a[2]))))
	case "lchown":
		need(3)
		return "", syscall.Lchown(a[0], int(int32(num(a[1]))), int(int32(num(a[2]))))
	case "truncate":
		need(2)
		return "", syscall.Truncate(a[0], int64(num(a[1])))
	case "ftruncate":
		need(2)
		fd, err := syscall.Open(a[0], os.O_WRONLY, 0)
		if err != nil {
			return "", err
		}
		defer syscall.Close(fd)
		return "", syscall.Ftruncate(fd, int64(num(a[1])))
	case "write", "append":
		need(2)
		flags := os.O_WRONLY
		if op == "append" {
			flags |= os.O_APPEND
		}
		fd, err := syscall.Open(a[0], flags, 0)
		if err != nil {
			return "", err
		}
		if _, err := syscall.Write(fd, []byte(a[1])); err != nil {
			syscall.Close(fd)
			return "", err
		}
		return "", syscall.Close(fd)
	case "read":
		need(1)
		b, err := os.ReadFile(a[0])
		return string(b), unwrap(err)
	case "utimens":
		need(3)
		ts := make([]unix.Timespec, 2)
		for i, s := range a[1:3] {
			switch s {
			case "now":
				ts[i] = unix.Timespec{Nsec: unix.UTIME_NOW}
			case "omit":
				ts[i] = unix.Timespec{Nsec: unix.UTIME_OMIT}
			default:
				ts[i] = unix.Timespec{Sec: int64(num(s))}
			}
		}
		return "", unix.UtimesNanoAt(unix.AT_FDCWD, a[0], ts, 0)
	case "access":
		need(2)
		var mask uint32
		for _, c := range a[1] {
			mask |= map[rune]uint32{'r': 4, 'w': 2, 'x': 1, 'f': 0}[c]
		}
		return "", unix.Faccessat(unix.AT_FDCWD, a[0], mask, 0)
	case "setxattr":
		need(3)
		return "", unix.Setxattr(a[0], a[1], []byte(a[2]), 0)
	case "getxattr":
		need(2)
		buf := make([]byte, 64<<10)
		n, err := unix.Getxattr(a[0], a[1], buf)
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case "readdir":
		need(1)
		es, err := os.ReadDir(a[0])
		if err != nil {
			return "", unwrap(err)
		}
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		return strings.Join(names, " "), nil
	case "stat":
		need(1)
		var st syscall.Stat_t
		if err := syscall.Lstat(a[0], &st); err != nil {
			return "", err
		}
		return fmt.Sprintf("%o %d %d %d", st.Mode, st.Uid, st.Gid, st.Size), nil
	case "create-ftruncate":
		need(2)
		fd, err := syscall.Open(a[0], os.O_CREATE|os.O_RDWR, 0)
		if err != nil {
			return "", err
		}
		defer syscall.Close(fd)
		return "", syscall.Ftruncate(fd, int64(num(a[1])))
	case "flock":
		need(1)
		fd, err := syscall.Open(a[0], os.O_RDWR, 0)
		if err != nil {
			return "", err
		}
		defer syscall.Close(fd)
		return "", syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
	case "setlk", "setlkw", "getlk":
		need(2)
		fd, err := syscall.Open(a[0], os.O_RDWR, 0)
		if err != nil {
			return "", err
		}
		defer syscall.Close(fd)
		lk := syscall.Flock_t{Type: syscall.F_WRLCK}
		if a[1] == "r" {
			lk.Type = syscall.F_RDLCK
		}
		switch op {
		case "setlk":
			return "", syscall.FcntlFlock(uintptr(fd), syscall.F_SETLK, &lk)
		case "setlkw":
			return "", syscall.FcntlFlock(uintptr(fd), syscall.F_SETLKW, &lk)
		}
		if err := syscall.FcntlFlock(uintptr(fd), syscall.F_GETLK, &lk); err != nil {
			return "", err
		}
		return map[int16]string{syscall.F_RDLCK: "r", syscall.F_WRLCK: "w", syscall.F_UNLCK: "u"}[lk.Type], nil
	case "renameat2":
		need(3)
		flags := map[string]uint{"noreplace": unix.RENAME_NOREPLACE, "exchange": unix.RENAME_EXCHANGE}[a[2]]
		return "", unix.Renameat2(unix.AT_FDCWD, a[0], unix.AT_FDCWD, a[1], flags)
	}
	panic("fusetest: unknown operation " + op)
}

func unwrap(err error) error {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return err
}
