// A tiny program for the compare tests: one vendored dependency, so build info has a dep line.
package main

import (
	"fmt"

	"example.com/greet"
)

func main() {
	fmt.Println(greet.Hello("reprobuild"))
}
