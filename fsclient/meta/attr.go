package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
)

// Ino is an inode number. 0 is never a valid inode.
type Ino uint64

// RootIno is the root directory of every volume.
const RootIno Ino = 1

// Inode types (Attr.Typ).
const (
	TypeFile uint8 = iota + 1
	TypeDir
	TypeSymlink
	TypeFIFO
	TypeBlockDev
	TypeCharDev
	TypeSocket
)

// Special mode bits.
const (
	modeSetuid = 0o4000
	modeSetgid = 0o2000
	modeSticky = 0o1000
)

// Attr is an inode's attributes.
type Attr struct {
	Typ       uint8
	Mode      uint16 // permission bits 07777, including setuid, setgid and sticky
	Uid       uint32
	Gid       uint32
	Nlink     uint32
	Size      uint64
	Rdev      uint32
	Atime     int64 // seconds
	Mtime     int64
	Ctime     int64
	Atimensec uint32
	Mtimensec uint32
	Ctimensec uint32
	Parent    Ino // directories only: the directory containing it (root: itself)
}

// SMode returns the type and permission bits as in stat(2)'s st_mode.
func (a *Attr) SMode() uint32 {
	var t uint32
	switch a.Typ {
	case TypeFile:
		t = syscall.S_IFREG
	case TypeDir:
		t = syscall.S_IFDIR
	case TypeSymlink:
		t = syscall.S_IFLNK
	case TypeFIFO:
		t = syscall.S_IFIFO
	case TypeBlockDev:
		t = syscall.S_IFBLK
	case TypeCharDev:
		t = syscall.S_IFCHR
	case TypeSocket:
		t = syscall.S_IFSOCK
	}
	return t | uint32(a.Mode&0o7777)
}

// attr encoding: version byte, then fixed-width big-endian fields.
const (
	attrVersion = 1
	attrLen     = 1 + 1 + 2 + 4 + 4 + 4 + 8 + 4 + 3*8 + 3*4 + 8
)

// errCorrupt marks metadata that does not decode.
var errCorrupt = errors.New("metadata is corrupt")

func encodeAttr(a *Attr) []byte {
	b := make([]byte, 0, attrLen)
	b = append(b, attrVersion, a.Typ)
	b = binary.BigEndian.AppendUint16(b, a.Mode)
	b = binary.BigEndian.AppendUint32(b, a.Uid)
	b = binary.BigEndian.AppendUint32(b, a.Gid)
	b = binary.BigEndian.AppendUint32(b, a.Nlink)
	b = binary.BigEndian.AppendUint64(b, a.Size)
	b = binary.BigEndian.AppendUint32(b, a.Rdev)
	b = binary.BigEndian.AppendUint64(b, uint64(a.Atime))
	b = binary.BigEndian.AppendUint64(b, uint64(a.Mtime))
	b = binary.BigEndian.AppendUint64(b, uint64(a.Ctime))
	b = binary.BigEndian.AppendUint32(b, a.Atimensec)
	b = binary.BigEndian.AppendUint32(b, a.Mtimensec)
	b = binary.BigEndian.AppendUint32(b, a.Ctimensec)
	return binary.BigEndian.AppendUint64(b, uint64(a.Parent))
}

// decodeAttr parses an encoded Attr. It never panics: any input that is not
// a well-formed record yields an error wrapping errCorrupt.
func decodeAttr(b []byte) (Attr, error) {
	var a Attr
	if len(b) == 0 {
		return a, fmt.Errorf("empty attribute record: %w", errCorrupt)
	}
	if b[0] != attrVersion {
		return a, fmt.Errorf("attribute record version %d is unknown: %w", b[0], errCorrupt)
	}
	if len(b) != attrLen {
		return a, fmt.Errorf("attribute record of %d bytes, want %d: %w", len(b), attrLen, errCorrupt)
	}
	a.Typ = b[1]
	a.Mode = binary.BigEndian.Uint16(b[2:])
	a.Uid = binary.BigEndian.Uint32(b[4:])
	a.Gid = binary.BigEndian.Uint32(b[8:])
	a.Nlink = binary.BigEndian.Uint32(b[12:])
	a.Size = binary.BigEndian.Uint64(b[16:])
	a.Rdev = binary.BigEndian.Uint32(b[24:])
	a.Atime = int64(binary.BigEndian.Uint64(b[28:]))
	a.Mtime = int64(binary.BigEndian.Uint64(b[36:]))
	a.Ctime = int64(binary.BigEndian.Uint64(b[44:]))
	a.Atimensec = binary.BigEndian.Uint32(b[52:])
	a.Mtimensec = binary.BigEndian.Uint32(b[56:])
	a.Ctimensec = binary.BigEndian.Uint32(b[60:])
	a.Parent = Ino(binary.BigEndian.Uint64(b[64:]))
	switch {
	case a.Typ < TypeFile || a.Typ > TypeSocket:
		return Attr{}, fmt.Errorf("attribute record has unknown type %d: %w", a.Typ, errCorrupt)
	case a.Mode&^0o7777 != 0:
		return Attr{}, fmt.Errorf("attribute record has mode %#o: %w", a.Mode, errCorrupt)
	case a.Atimensec >= 1e9 || a.Mtimensec >= 1e9 || a.Ctimensec >= 1e9:
		return Attr{}, fmt.Errorf("attribute record has nanoseconds out of range: %w", errCorrupt)
	case a.Typ == TypeDir && a.Parent == 0:
		return Attr{}, fmt.Errorf("directory attribute record without parent: %w", errCorrupt)
	}
	return a, nil
}

// dentry value: type byte then 8-byte inode number.
const dentryLen = 9

func encodeDentry(typ uint8, ino Ino) []byte {
	b := make([]byte, 0, dentryLen)
	b = append(b, typ)
	return binary.BigEndian.AppendUint64(b, uint64(ino))
}

func decodeDentry(b []byte) (uint8, Ino, error) {
	if len(b) != dentryLen {
		return 0, 0, fmt.Errorf("directory entry of %d bytes, want %d: %w", len(b), dentryLen, errCorrupt)
	}
	typ, ino := b[0], Ino(binary.BigEndian.Uint64(b[1:]))
	if typ < TypeFile || typ > TypeSocket || ino == 0 {
		return 0, 0, fmt.Errorf("directory entry (type %d, inode %d) is invalid: %w", typ, ino, errCorrupt)
	}
	return typ, ino, nil
}
