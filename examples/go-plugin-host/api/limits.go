//go:build !biglimits

package api

// MaxNameLength is the longest name a greeter accepts. Building with `-tags biglimits` changes this
// package, so a plugin built with that tag no longer loads in a host built without it.
const MaxNameLength = 64

// Limits describes the build's limits.
func Limits() string { return "default" }
