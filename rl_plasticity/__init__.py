"""Neuroplastic Expansion (growing sparse TD3 with dormant pruning and experience review), in JAX."""
