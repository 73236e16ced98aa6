"""Test doubles and fixtures' machinery shipped in the package (reused by benchmarks)."""
