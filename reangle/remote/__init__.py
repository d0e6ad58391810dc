"""Remote providers: models reangle cannot run on the user's own hardware (closed weights), reached through
the vendor's API with the operator's key. The engine side (jobs, assets, progress) stays reangle's own."""
