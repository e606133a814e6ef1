// A tiny pure-Go program: the same bytes must come out of every backend.
package main

import (
	"fmt"
	"runtime"

	"example.com/hello/greet"
)

func main() {
	fmt.Println(greet.Hello("reprobuild"), runtime.Version())
}
