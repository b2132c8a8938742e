"""The latency_snp service: int8 Snapdragon latency (SNPE on boards, Qualcomm AI Hub, or the emulation)."""
