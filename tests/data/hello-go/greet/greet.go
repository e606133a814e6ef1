// Package greet is a second package, so an incremental build has something to reuse.
package greet

// Hello returns a greeting.
func Hello(name string) string {
	return "hello, " + name
}
