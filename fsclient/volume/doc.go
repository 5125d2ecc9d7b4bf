// Package volume ties one volume's parts together: the metadata client
// (package meta, opened from the META_URL), the settings recorded at format
// time (package format), the object store named by those settings and
// scoped to the volume's prefix in the bucket (package object), and the
// chunk store that reads and writes blocks (package chunk).
//
// It also holds the operations that span those parts: Create (format),
// GC (find leaked block objects) and Fsck (find missing blocks and tree
// damage). Create never destroys data: re-formatting with Force re-writes
// tunable settings only, keeps the volume's UUID, and refuses to take over
// a bucket prefix owned by another volume unless forced.
//
// A bucket prefix is owned by the volume recorded in its marker object
// "skiff-volume.json"; block objects live under "chunks/".
package volume
