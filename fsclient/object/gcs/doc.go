// Package gcs implements object.Store over a Google Cloud Storage bucket
// with the official client, cloud.google.com/go/storage (the only package
// of skiff that imports it).
//
// Keys map to object names Config.Prefix+key. Reads are ranged
// (NewRangeReader); a read starting at or past the end of an object returns
// nothing, as object.Store requires.
//
// Writes go through a storage.Writer whose ChunkSize is the object's size
// plus one byte rounded up to 256 KiB, capped at Config.ChunkSize (default
// 4.25 MiB, so a default 4 MiB block fits): an object smaller than the
// chunk is sent in one request, larger ones as a resumable upload, and a
// writer never buffers more than one chunk (not the library's default
// 16 MiB). The CRC32C of the data is sent with the
// upload, so GCS rejects an object corrupted in transit. GCS replaces an
// object atomically on upload completion: readers see the old or the new
// generation, never a partial object.
//
// Retries: the client retries 408, 429 and 5xx responses and transient
// network errors (storage.ShouldRetry) with exponential backoff and jitter
// (Config.InitialBackoff doubling up to Config.MaxBackoff) for at most
// Config.MaxAttempts attempts, and never past the caller's context. The
// policy is storage.RetryAlways rather than the default RetryIdempotent,
// which would not retry uploads and deletes made without generation
// preconditions. Retrying them is safe for skiff: block objects are
// immutable and their keys unique, so a repeated upload writes the same
// bytes, and a repeated Delete that finds the object gone is a success.
// (A store used for objects that are overwritten with different contents
// by concurrent writers could, after a retry, end with the older contents;
// skiff never does that.)
//
// Credentials: Config.CredentialsFile (a google-credentials.json key of
// any type the auth library knows) or else Application Default
// Credentials, which on GKE is the pod's workload identity. When the
// environment variable STORAGE_EMULATOR_HOST is set, the client library
// talks to that emulator without credentials; this package never reads it.
//
// New checks that the bucket exists and is reachable, so a wrong bucket
// name fails at mount or format time with a message saying what to fix.
//
// Credentials: with Config.Restricted (privileged callers whose
// credentials file comes from a pod author) the file must pass
// CheckCredentials before the auth library sees it: Google token
// endpoints only, external_account only from a projected token file to
// Google's STS; refusals name the rule, never the file's contents.
//
// Concurrency: a *Store is safe for concurrent use; it holds one HTTP
// client with its connection pool, released by Close. Buffers: Put does
// not keep data after it returns; the reader from Get streams from the
// network and must be closed.
package gcs
