"""Operations seams: logging, request ids, security headers, health checks."""
