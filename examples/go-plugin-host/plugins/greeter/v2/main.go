// Command v2 is release 2 of the greeter plugin. It lives in its own package directory: Go never
// unloads a plugin and refuses a second one with the same plugin path ("plugin already loaded"), so
// a new release needs a new import path as well as a new file name.
package main

import (
	"fmt"
	"strings"

	"github.com/pkg/errors"

	"example.com/reprobuild/go-plugin-host/api"
)

type greeter struct{}

func (greeter) Version() string { return "v2" }

func (greeter) Greet(name string) (string, error) {
	if len(name) > api.MaxNameLength {
		return "", errors.Wrap(errors.New("too long"), "greeter v2")
	}
	return fmt.Sprintf("Hello, %s! (limits: %s)", strings.TrimSpace(name), api.Limits()), nil
}

// New is the symbol the host looks up.
func New() api.Greeter { return greeter{} }

func main() {}
