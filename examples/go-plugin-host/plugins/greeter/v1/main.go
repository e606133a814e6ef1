// Command v1 is release 1 of the greeter plugin (`go build -buildmode=plugin`).
package main

import (
	"fmt"

	"github.com/pkg/errors"

	"example.com/reprobuild/go-plugin-host/api"
)

type greeter struct{}

func (greeter) Version() string { return "v1" }

func (greeter) Greet(name string) (string, error) {
	if len(name) > api.MaxNameLength {
		return "", errors.Errorf("name longer than %d bytes", api.MaxNameLength)
	}
	return fmt.Sprintf("hello, %s", name), nil
}

// New is the symbol the host looks up.
func New() api.Greeter { return greeter{} }

func main() {}
