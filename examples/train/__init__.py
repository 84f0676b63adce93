"""Training and packaging the default codec."""
