// Package format holds a volume's settings record (Format), written once by
// `skiff format` into the metadata engine and read by every client. It is a
// leaf package shared by meta (which stores it) and chunk (which configures
// block size, compression and encryption from it). Secrets never appear in
// it: the data key is stored only wrapped by a passphrase-derived key.
package format
