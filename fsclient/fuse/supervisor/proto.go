package supervisor

import "encoding/binary"

// The few parts of the FUSE wire format (linux/fuse.h, ABI 7.x) the relay
// reads. Everything is little-endian on the architectures skiff supports.

const (
	inHeaderSize  = 40 // struct fuse_in_header
	outHeaderSize = 16 // struct fuse_out_header
	entryOutSize  = 128
	initOutSize   = 64 // struct fuse_init_out since 7.23 (padded)
)

// Opcodes (enum fuse_opcode).
const (
	opSetattr       = 4
	opOpen          = 14
	opRead          = 15
	opWrite         = 16
	opRelease       = 18
	opFsync         = 20
	opFlush         = 25
	opInit          = 26
	opOpendir       = 27
	opReleasedir    = 29
	opInterrupt     = 36
	opDestroy       = 38
	opForget        = 2
	opNotifyReply   = 41
	opBatchForget   = 42
	opFallocate     = 43
	opCreate        = 35
	opTmpfile       = 51
	fattrSize       = 1 << 3
	syntheticUnique = 1 << 63 // uniques the supervisor makes itself
)

// inHeader is the part of struct fuse_in_header the relay uses.
type inHeader struct {
	len    uint32
	opcode uint32
	unique uint64
	nodeid uint64
}

func parseIn(b []byte) (inHeader, bool) {
	if len(b) < inHeaderSize {
		return inHeader{}, false
	}
	return inHeader{
		len:    le.Uint32(b[0:]),
		opcode: le.Uint32(b[4:]),
		unique: le.Uint64(b[8:]),
		nodeid: le.Uint64(b[16:]),
	}, true
}

// outHeader is struct fuse_out_header.
type outHeader struct {
	len    uint32
	errno  int32
	unique uint64
}

func parseOut(b []byte) (outHeader, bool) {
	if len(b) < outHeaderSize {
		return outHeader{}, false
	}
	return outHeader{len: le.Uint32(b[0:]), errno: int32(le.Uint32(b[4:])), unique: le.Uint64(b[8:])}, true
}

var le = binary.LittleEndian

// u32 and u64 read the body field at off (after the header), 0 when the
// message is too short.
func u32(b []byte, off int) uint32 {
	if len(b) < off+4 {
		return 0
	}
	return le.Uint32(b[off:])
}

func u64(b []byte, off int) uint64 {
	if len(b) < off+8 {
		return 0
	}
	return le.Uint64(b[off:])
}

// setUnique rewrites the unique of a request.
func setUnique(b []byte, u uint64) { le.PutUint64(b[8:], u) }

// fsyncRequest builds a FUSE_FSYNC of fh on nodeid with unique u.
func fsyncRequest(u, nodeid, fh uint64) []byte {
	b := make([]byte, inHeaderSize+16)
	le.PutUint32(b[0:], uint32(len(b)))
	le.PutUint32(b[4:], opFsync)
	le.PutUint64(b[8:], u)
	le.PutUint64(b[16:], nodeid)
	le.PutUint64(b[inHeaderSize:], fh)
	return b
}

// initOut holds the fields of struct fuse_init_out a replacement worker
// must agree on.
type initOut struct {
	major, minor uint32
	flags        uint64 // flags | flags2<<32
	maxWrite     uint32
	maxPages     uint16
}

func parseInitOut(reply []byte) (initOut, bool) {
	b := reply[outHeaderSize:]
	if len(b) < 24 {
		return initOut{}, false
	}
	o := initOut{major: le.Uint32(b[0:]), minor: le.Uint32(b[4:]), flags: uint64(le.Uint32(b[12:])), maxWrite: le.Uint32(b[20:])}
	if len(b) >= 36 {
		o.maxPages = le.Uint16(b[28:])
		o.flags |= uint64(le.Uint32(b[32:])) << 32
	}
	return o, true
}

// clampInitOut lowers max_write and max_pages of an INIT reply to max
// bytes (what one socket message can carry).
func clampInitOut(reply []byte, max uint32, pageSize int) {
	b := reply[outHeaderSize:]
	if len(b) >= 24 && le.Uint32(b[20:]) > max {
		le.PutUint32(b[20:], max)
	}
	if len(b) >= 30 {
		pages := uint16((int(max) + pageSize - 1) / pageSize)
		if le.Uint16(b[28:]) > pages {
			le.PutUint16(b[28:], pages)
		}
	}
}
