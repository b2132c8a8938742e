"""Kubernetes awareness: trainer autoscaling by pending work, and a cluster status report."""
