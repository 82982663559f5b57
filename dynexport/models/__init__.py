"""Torch modules shared by export and training (never by the runtime)."""
