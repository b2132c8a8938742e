"""Tests that need real hardware; each is marked and skipped when the hardware is absent."""
