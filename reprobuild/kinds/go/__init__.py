"""The Go builder kind: builder, assertions, vendoring and pruning, the file-based module proxy."""
