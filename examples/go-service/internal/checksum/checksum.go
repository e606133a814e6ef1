// Package checksum computes zlib's checksums of a buffer through the system zlib (cgo).
package checksum

/*
#cgo LDFLAGS: -lz
#include <stdlib.h>
#include <zlib.h>
*/
import "C"

import (
	"unsafe"

	"github.com/pkg/errors"
)

// Sums are zlib's CRC-32 and Adler-32 of a buffer and the size zlib compresses it to.
type Sums struct {
	CRC32      uint32
	Adler32    uint32
	Compressed int
}

// Of computes the sums of data with zlib at compression level 9.
func Of(data []byte) (Sums, error) {
	var src *C.Bytef
	if len(data) > 0 {
		src = (*C.Bytef)(unsafe.Pointer(&data[0]))
	}
	n := C.uLong(len(data))
	crc := C.crc32(0, src, C.uInt(n))
	adler := C.adler32(1, src, C.uInt(n))

	bound := C.compressBound(n)
	dst := C.malloc(C.size_t(bound))
	if dst == nil {
		return Sums{}, errors.New("zlib: out of memory")
	}
	defer C.free(dst)
	dstLen := bound
	if rc := C.compress2((*C.Bytef)(dst), &dstLen, src, n, 9); rc != C.Z_OK {
		return Sums{}, errors.Errorf("zlib: compress2 returned %d", int(rc))
	}
	return Sums{CRC32: uint32(crc), Adler32: uint32(adler), Compressed: int(dstLen)}, nil
}
