"""Everything that knows about HTTP requests and responses: routes, request parsing, the origin gate,
the request log, authentication and admission."""
