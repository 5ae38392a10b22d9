"""A server operator who modifies their own party process, against the real services (docs/SECURITY.md)."""
