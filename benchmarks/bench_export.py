"""What ``mmdtok export-onnx`` costs: the wall-clock time of the command, from its start to
its last line, for the shipped default codec and for the ``musicgen-32khz`` layout.

The MusicGen network has random weights with codebooks fitted to its own latents (saved
as a model folder first, not timed): the export's cost does not depend on what the
weights learned. Each run is a fresh ``mmdtok`` process, so the time includes starting
Python and importing torch, as a user would wait; it includes the export's check in
onnxruntime. Printed per codec: parameters, seconds per run (each of ``--repeats``), and
the check line the command printed.

    python benchmarks/bench_export.py [--repeats 1] [--only small-music|musicgen-32khz]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table

from mmdtok.persistence import load_codec
from mmdtok.testing import trained_codebooks

CASES = ("small-music", "musicgen-32khz")


def _export(folder: Path, model: Path | None) -> tuple[float, str]:
    """Seconds of one ``mmdtok export-onnx`` and the check line it printed."""
    command = [sys.executable, "-m", "mmdtok", "export-onnx", "-o", str(folder)]
    if model is not None:
        command += ["--model", str(model)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"export-onnx failed:\n{result.stderr}")
    check = next((line for line in (result.stdout + result.stderr).splitlines()
                  if "codes equal" in line), "no check line")
    return seconds, check.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", choices=CASES)
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name in (args.only,) if args.only else CASES:
            model = None
            if name == "small-music":
                codec = load_codec(None)
            else:
                codec = trained_codebooks(name)
                model = Path(root) / f"{name}-model"
                codec.save_pretrained(model)
            params = sum(p.numel() for p in codec.parameters()) / 1e6
            times, check = [], ""
            for k in range(args.repeats):
                seconds, check = _export(Path(root) / f"{name}-{k}", model)
                times.append(seconds)
                print(f"{name}: {seconds:.1f} s", flush=True)
            rows.append([name + (" (shipped)" if model is None else " (layout)"),
                         f"{params:.1f} M", ", ".join(f"{t:.0f}" for t in times), check])
    print(f"\ntorch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(markdown_table(["codec", "parameters", "seconds per export", "check"], rows))


if __name__ == "__main__":
    main()
