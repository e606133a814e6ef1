//go:build biglimits

package api

// MaxNameLength is the longest name a greeter accepts (the `biglimits` build).
const MaxNameLength = 4096

// Limits describes the build's limits.
func Limits() string { return "big" }
