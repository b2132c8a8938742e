"""Evaluation backends served by the objective services (trainer, latency_cpu, latency_snp)."""
