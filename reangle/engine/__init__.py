"""Inference engines behind one protocol: qwen (real), tiny (random weights, offline), fake (no torch)."""
