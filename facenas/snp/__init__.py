"""Snapdragon latency: the SNPE SDK with boards attached over adb, and Qualcomm AI Hub."""
