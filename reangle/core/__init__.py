"""The domain: camera poses and edit requests. No HTTP, no torch."""
