module example.com/reprobuild/go-service

go 1.20

require (
	github.com/cespare/xxhash/v2 v2.1.1
	github.com/google/uuid v1.3.0
	github.com/pkg/errors v0.9.1
)
