"""The tamper-evident audit trail: who changed what, when, chained by SHA-256."""
