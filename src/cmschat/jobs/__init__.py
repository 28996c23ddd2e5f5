"""Background jobs: the in-process scheduler and the lease that picks one leader."""
