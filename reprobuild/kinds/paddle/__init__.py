"""The Paddle builder kind: builder and the export harness."""
