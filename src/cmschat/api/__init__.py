"""HTTP transport: dependencies, error mapping and the /api/v1 router."""
