"""Toolchains: the content-addressed cache, downloads, safe extraction, wheelhouses."""
