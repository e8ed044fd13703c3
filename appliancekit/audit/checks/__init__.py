"""One module per audit check; each registers itself with `@audit_check`."""
