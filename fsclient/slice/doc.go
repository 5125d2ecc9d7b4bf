// Package slice holds the on-storage data format shared by meta and chunk:
// the 24-byte slice record, the rule that later slices win where they
// overlap (Resolve), how a slice is cut into blocks and named in object
// storage (Blocks, BlockKey), and how a file range splits into chunk ranges
// (Split). It is a leaf: it imports nothing of skiff and does no I/O.
//
// Changing anything here changes the data format of existing volumes.
package slice
