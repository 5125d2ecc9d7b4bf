// Package testsecret makes hostile passwords for tests and checks that no
// piece of one shows in text: the rule of issue #12 is that no error, log
// line, probe body or command line holds any 4-character substring of a
// password.
package testsecret

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// special are the characters that break naive URL handling; every
// password holds each of them.
const special = "/#?@%:"

const plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// Rand returns a seeded generator and logs the seed; SKIFF_TEST_SEED
// replays one.
func Rand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SKIFF_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SKIFF_TEST_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with SKIFF_TEST_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x5eed))
}

// Password returns a password of n >= 20 characters holding every one of
// "/ # ? @ % :" at random places among letters and digits.
func Password(r *rand.Rand, n int) string {
	if n < 20 {
		n = 20
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = plain[r.IntN(len(plain))]
	}
	for i, p := range r.Perm(n)[:len(special)] {
		b[p] = special[i]
	}
	return string(b)
}

// Leak returns the first 4-character substring of secret found in text,
// or "" when there is none.
func Leak(text, secret string) string {
	for i := 0; i+4 <= len(secret); i++ {
		if strings.Contains(text, secret[i:i+4]) {
			return secret[i : i+4]
		}
	}
	return ""
}

// Check fails t when text (named what, e.g. "readyz body") holds a piece
// of secret.
func Check(t testing.TB, what, text, secret string) {
	t.Helper()
	if l := Leak(text, secret); l != "" {
		t.Errorf("%s holds %q, a piece of the password: %s", what, l, text)
	}
}
