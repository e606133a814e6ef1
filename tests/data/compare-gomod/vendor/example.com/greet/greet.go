// Package greet is a vendored dependency of the compare test module.
package greet

// Hello greets name.
func Hello(name string) string {
	return "hello, " + name
}
