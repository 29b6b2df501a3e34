"""The web process (`tayori serve`): LINE's webhook, the unsubscribe page, and the
health check. It shares the models and settings with the worker and never sends
bulk messages itself; only LINE replies, which cost no quota."""
