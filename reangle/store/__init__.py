"""Ports and adapters for storage: job store, asset store, remote inputs."""
