"""Integrations with web frameworks, each needing its framework (an extra of its own)."""
