// Package api is what the host and its plugins share: the interface a plugin implements and the
// limits both sides agree on. Go's loader refuses a plugin whose copy of this package (or of any other
// package both sides contain) was compiled differently from the host's.
package api

// Greeter is what a plugin's exported `New` returns.
type Greeter interface {
	// Version names the plugin release, e.g. "v2".
	Version() string
	// Greet answers a request; an error wraps its cause.
	Greet(name string) (string, error)
}

// Factory is the type of the `New` symbol every plugin exports.
type Factory = func() Greeter
