"""Reproducible training of the models shipped in assets/."""
