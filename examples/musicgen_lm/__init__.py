"""The reference MusicGen-style LM: model, data, sampling, training and generation."""
