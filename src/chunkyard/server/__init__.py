"""The PBS-compatible REST API server (section 11): auth, tasks and the endpoints."""
