"""Business logic as plain functions: routes and tasks call these."""
