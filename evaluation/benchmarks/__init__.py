"""One module per benchmark; each registers itself with ``evaluation.registry.register``."""
