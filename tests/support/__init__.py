"""Shared test helpers (no tests here): realistic console installations built the way an operator builds
them, for the UI, wiring and treatment tests. Never a second implementation of what the product does."""
