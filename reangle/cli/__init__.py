"""The reangle command line."""
