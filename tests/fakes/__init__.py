"""Test doubles of adb and the SNPE SDK tools (never shipped; see README.md)."""
