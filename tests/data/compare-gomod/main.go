// A tiny program for the compare tests: one vendored dependency, so build info has a dep line, and a
// string variable for -X.
package main

import (
	"fmt"

	"example.com/greet"
)

// version is set at link time: -ldflags="-X main.version=1.2.3".
var version = "dev"

func main() {
	fmt.Println(greet.Hello("reprobuild"), version)
}
