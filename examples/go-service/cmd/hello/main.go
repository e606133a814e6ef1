// Command hello prints a greeting with a name-based UUID and an xxHash64 of the name.
//
// Pure Go: built with CGO_ENABLED=0 for linux/amd64 and linux/arm64. Its output depends only on its
// arguments (no clock, no randomness), so two builds can be compared by running them too.
package main

import (
	"fmt"
	"os"

	"github.com/cespare/xxhash/v2"
	"github.com/google/uuid"
)

// version is set at build time with -ldflags '-X main.version=...'.
var version = "dev"

func main() {
	name := "reprobuild"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	// A version-5 (SHA-1, name-based) UUID: the same name always gives the same UUID.
	id := uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://example.com/"+name))
	fmt.Printf("hello, %s (go-service %s)\n", name, version)
	fmt.Printf("uuid:  %s\n", id)
	fmt.Printf("xxh64: %016x\n", xxhash.Sum64String(name))
}
