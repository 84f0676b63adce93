"""The codec trainer: data, steps, checkpoints, torch.distributed."""
