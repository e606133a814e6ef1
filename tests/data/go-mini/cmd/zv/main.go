// Command zv prints the zlib version it was linked against (a cgo program).
package main

// #cgo LDFLAGS: -lz
// #include <zlib.h>
import "C"
import "fmt"

func main() { fmt.Println(C.GoString(C.zlibVersion())) }
