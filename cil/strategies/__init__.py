"""Continual-learning strategies, one family per module, registered by name (see registry)."""
