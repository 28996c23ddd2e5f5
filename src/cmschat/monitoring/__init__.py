"""The console's monitoring: per-instance samples, activity from the database, firing alerts."""
