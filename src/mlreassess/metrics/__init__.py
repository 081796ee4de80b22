"""Metrics: pure functions over arrays (`core`, `bootstrap`); `evaluate` is the only part that reads files."""
