package fstest

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

var (
	seedFlag  = flag.Int64("seed", 0, "seed of TestModel (0: a new one, printed; env SKIFF_FSTEST_SEED)")
	stepsFlag = flag.Int("steps", 0, "steps of each TestModel run (0: 1000; env SKIFF_FSTEST_STEPS)")
	largeFlag = flag.String("largesize", "", "size of TestLargeFile's file, e.g. 3G or 256M (default 3G, 512M with -short; env SKIFF_FSTEST_LARGESIZE)")
)

// setting returns the flag's value when it was set on the command line,
// else the environment variable's, else "".
func setting(flagName, env string) string {
	var v string
	flag.Visit(func(f *flag.Flag) {
		if f.Name == flagName {
			v = f.Value.String()
		}
	})
	if v == "" {
		v = os.Getenv(env)
	}
	return v
}

func intSetting(t testing.TB, flagName, env string) (int64, bool) {
	s := setting(flagName, env)
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		t.Fatalf("-%s / %s: %v", flagName, env, err)
	}
	return n, true
}

// parseSize reads 3G, 512M, 64K or a plain number of bytes.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
