"""Readers and deterministic writers of file formats shared by builders and comparators."""
