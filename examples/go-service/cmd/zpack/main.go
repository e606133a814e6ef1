// Command zpack reads stdin and prints its zlib CRC-32, Adler-32, xxHash64 and compressed size.
//
// It links the system zlib through cgo (`#cgo LDFLAGS: -lz`), so it is built with CGO_ENABLED=1
// in an image that has gcc, libc and zlib1g-dev.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/cespare/xxhash/v2"
	"github.com/pkg/errors"

	"example.com/reprobuild/go-service/internal/checksum"
)

func run(in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return errors.Wrap(err, "reading stdin")
	}
	sums, err := checksum.Of(data)
	if err != nil {
		return errors.Wrap(err, "checksumming stdin")
	}
	_, err = fmt.Fprintf(out, "bytes:      %d\ncrc32:      %08x\nadler32:    %08x\nxxh64:      %016x\ncompressed: %d\n",
		len(data), sums.CRC32, sums.Adler32, xxhash.Sum64(data), sums.Compressed)
	return errors.Wrap(err, "writing the result")
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "zpack: %v\n", err)
		os.Exit(1)
	}
}
