// Package kvtest is the conformance suite every kv.Engine passes.
//
// Run(t, open) calls open once per sub-test and expects a fresh, empty
// volume each time (a new file, a new Redis prefix or database); the
// engine is closed by Run. The suite checks each Tx method including reads
// of the transaction's own writes, atomicity (an error from fn writes
// nothing), isolation under concurrency (exact counter totals, no lost hash
// fields, no torn reads), View rejecting writes, Incr, Scan by prefix
// (with glob characters), and that values are copies in both directions.
package kvtest
