// Package redis is the production kv.Engine: any Redis-protocol server
// (Redis, Valkey, managed Redis) through redigo. It is the only package
// that imports github.com/gomodule/redigo.
//
// # META_URL
//
//	redis://[user:pass@]host[:port][/db][?prefix=NAME]
//	rediss://...                                   TLS (Options.TLSConfig for a private CA)
//	redis+sentinel://[user:pass@]host:port,host:port/MASTER[/db][?prefix=NAME]
//
// Sentinel: redigo has no sentinel client, so the engine asks the
// sentinels in turn (SENTINEL get-master-addr-by-name), dials the answer,
// checks ROLE is master, and asks again whenever a connection to the
// master fails or a write meets READONLY. Name() never shows the password.
//
// # Key prefixing
//
// Every key of a volume starts with a hash tag: "{NAME}" with ?prefix=NAME,
// otherwise "{skiff}". All keys of one volume therefore hash to one Redis
// Cluster slot (MULTI/EXEC and WATCH need that), and volumes with
// different prefixes share one database without seeing each other. This is
// part of the on-disk format: do not change it without a migration. The
// tag is invisible to callers (Scan returns keys without it).
//
// # Transactions
//
// Update is optimistic. Reads inside fn WATCH their key and read it on the
// same connection (one round trip). Writes are buffered in the transaction
// and in an overlay, so fn reads its own writes (Append, IncrBy, HSet,
// HDel, HLen, HGetAll included). After fn, MULTI + the writes + EXEC go
// out together:
//   - a nil EXEC reply (a watched key changed) discards the attempt; fn
//     runs again after a jittered backoff, at most Options.MaxRetries
//     times (default 50), then Update returns an error wrapping
//     kv.ErrConflict;
//   - if fn returns an error after reading, an empty MULTI/EXEC checks
//     that its reads were current; if not, fn runs again instead of its
//     error (computed from a torn view) escaping;
//   - a connection that breaks before EXEC is sent (including one the
//     server closed while it sat idle or while fn ran, which is checked
//     without a round trip just before the commit) is retried on a new
//     connection, up to 8 times over about 4.5 s; the server drops a
//     MULTI without EXEC, so nothing was applied;
//   - a connection that breaks after EXEC was sent leaves the outcome
//     unknown: Update returns an error wrapping kv.ErrCommitUnknown and does
//     not retry. MULTI/EXEC is atomic, so the writes are all there or all
//     absent; never half.
//
// IncrBy inside Update reads (and WATCHes) the value and queues a SET of
// the result. Mixing a string and a hash under one key is a caller bug:
// Redis then applies the rest of the EXEC and Update reports the failed
// command.
//
// View runs plain reads (no WATCH/MULTI): each is atomic on its own; MGet
// (MGET) and HGetAll (HGETALL) are single commands. Writes in View are an
// error. Incr is INCRBY, not retried once sent (a break then wraps
// kv.ErrCommitUnknown). Scan is SCAN MATCH <tag><escaped prefix>* COUNT
// 1000 and may report a key twice.
//
// # Bounded waits
//
// Options.OpTimeout (default 15s; skiff mount --meta-timeout) bounds each
// operation as a whole: Update, View, Incr, each step of Scan, and Open.
// Connecting, every command (the read and write timeouts are at most
// OpTimeout) and the retries after a broken connection all fit in it.
// When it passes, the operation fails with an error naming the server and
// the timeout; it does not wrap context.DeadlineExceeded (the caller's
// own deadline did not pass), so at the FUSE edge it is EIO.
//
// Outages. The first second of an outage (or half of OpTimeout, if less)
// is ridden out: operations retry on new connections, so a restart or a
// failover costs a pause, not errors. After that, or as soon as one
// operation ran out of OpTimeout (a hung server), the server is known
// down: operations fail at once with the last failure, one operation per
// 200ms is let through as a probe, and the first operation that succeeds
// ends the outage. A dial that connects proves nothing (a hung server
// accepts connections).
//
// Connections come from a redigo pool; a borrowed idle connection is
// checked with a non-blocking peek at its socket (and PINGed when idle
// over a minute). Errors from Open name the problem and the fix in one
// line: an unreachable server, a wrong or missing password, a database
// number the server lacks.
package redis
