"""Primitive gradient transformations, one module per concept."""
