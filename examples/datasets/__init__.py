"""Corpus recipes: real music rendered from the scores music21 ships."""
