"""Shared pytest set-up. Every test runs by default: there are no opt-in or skipped tests."""
