// Package image keeps file images: whole-file copies of fully cached
// files in the cache's file system, laid out byte for byte as the file
// (offset N of the image is offset N of the file), so the kernel can serve
// reads of an open file straight from the image (FUSE passthrough)
// without a round trip through skiff.
//
// # Guarantees
//
//   - An image is one state of one file: it is named by the inode and the
//     file's stamp in meta (size, mtime, ctime), and Lookup returns it only
//     for exactly that stamp. Any change by any client moves ctime, so a
//     changed file never matches an old image; Lookup removes one it finds
//     stale.
//   - Complete or absent: Build writes a temporary file (a name starting
//     with '.'), syncs its data and renames it into place, so a crash
//     leaves no partial image under a final name. Open removes temporary
//     files.
//   - Space: images count against the block cache's limit and free-space
//     floor (cache.Claim) and, among themselves, against Config.Limit;
//     the least recently used images are removed first. An image removed
//     while the kernel still reads it keeps its space until the last
//     reader closes it.
//   - Checksums: Build's data comes from the caller (package vfs reads it
//     through the block cache, whose pieces are verified on every read).
//     Reads through an image are not verified again: the kernel reads the
//     image directly. Mounts that want every read checked turn passthrough
//     off (skiff mount --passthrough=false).
//   - Decoded data: images hold the file's plain bytes, so they are kept
//     only for a cache private to the pod (package cache, Config.Shared).
//
// An image of inode I at stamp S lives at DIR/I-SIZE-MTIME-CTIME (the
// stamp in hex).
package image
