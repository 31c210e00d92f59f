"""HTTP API: routes, auth (bearer keys with scopes), the error envelope, OpenAPI."""
