"""Train the small codec for a few steps as one rank of a torchrun job (gloo on CPU), with
the independence loss on, and write this rank's weights to OUT.rank<r>.pt.

    torchrun --nproc-per-node 2 tests/workers/train_codec.py MANIFEST RUN_DIR OUT
"""

import sys

import torch
import torch.distributed as dist

from mmdtok.distributed import rank
from mmdtok.train.config import TrainConfig
from mmdtok.train.loop import train

SETTINGS = {"steps": 4, "batch_size": 2, "segment_seconds": 0.25, "discriminator_filters": 4,
            "adversarial_from": 2, "independence": True, "independence_every": 2,
            "checkpoint_every": 4, "warmup_steps": 1, "valid_every": 0, "device": "cpu"}


def main(manifest: str, run_dir: str, out: str) -> None:
    dist.init_process_group("gloo")
    losses = []
    run = train(TrainConfig.from_dict(SETTINGS), [manifest], run_dir,
                progress=lambda step, values: losses.append(values))
    state = {f"codec.{k}": v for k, v in run.codec.state_dict().items()}
    state |= {f"ema.{k}": v for k, v in run.ema.state_dict().items()}
    state |= {f"disc.{k}": v for k, v in run.discriminator.state_dict().items()}
    state["independence"] = torch.tensor([v["independence"] for v in losses
                                          if "independence" in v])
    torch.save(state, f"{out}.rank{rank()}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
