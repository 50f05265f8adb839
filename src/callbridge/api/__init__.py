"""The REST API (Starlette): routes, auth, origin policy, validation, errors."""
