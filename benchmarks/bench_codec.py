"""mmdtok's codec vs transformers.EncodecModel, same (random) weights, one process.

Setting: the MusicGen 32 kHz network (``musicgen-32khz`` preset, facebook/encodec_32khz
config), 10 s of mono audio, batch 1 and batch 8. The EnCodec model gets codebooks drawn
from its own latents (its initial codebooks are zeros) and is loaded into mmdtok through
the EnCodec import, so both sides hold the same weights. mmdtok encodes and decodes
through ``encode_many`` / ``decode_many`` (the path of ``mmdtok encode``: weight norm
folded, pieces of the input batched, exact); transformers through ``encode`` /
``decode`` on the whole batch.

Checks that the codes are identical (or differ only at float32 ties, which the script
verifies) and that the decoded audio agrees, then prints speed ratios (theirs / ours:
above 1 means mmdtok is faster). Targets: not slower anywhere, >= 1.5x on encode.
It also prints the batch-1 floor: the LSTM's time (the same ``nn.LSTM`` on both sides,
bound by reading its recurrent weights at every frame, which the script shows by timing
those matrix-vector products alone) plus the convolutions' products at this machine's
float32 product rate, and the speed-up over transformers that allows.

``--onnx`` adds onnxruntime (CPU) running mmdtok's export of the same codec
(``mmdtok.export.export_onnx``, whole input in one pass) against mmdtok: codes compared
exactly, audio within 1e-4, the ratio onnxruntime / mmdtok.

``--decoders`` compares instead the two decoders of the default codec behind the same
codes: the frame-rate (ISTFT) decoder of ``mmdtok:small-music`` against the SEANet
decoder of ``mmdtok:small-music-seanet``, decoding 10 s of real music's codes at batch 1
(and 8) through ``decode_many``, both timed alternately in this process; the target is
>= 3x at batch 1. (Before the frame-rate decoder ships, its default architecture with
random weights stands in unless ``--frame-rate-model`` names a trained one: the time does
not depend on the weights.)

    python benchmarks/bench_codec.py [--repeats 5] [--device cpu|cuda] [--onnx]
    python benchmarks/bench_codec.py --decoders [--threads 1] [--frame-rate-model FOLDER]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import compare, markdown_table, median_seconds

from mmdtok import Codec
from mmdtok.models import ChunkSettings, decode_many, encode_many
from mmdtok.testing import ENCODEC_CONFIGS, assert_same_codes_up_to_ties, encodec_folder, notes

SECONDS = 10.0


def measure(ours: Codec, theirs: torch.nn.Module, batch: int, device: torch.device,
            repeats: int) -> list[list[str]]:
    """Check agreement on ``batch`` clips of 10 s, then time encode and decode."""
    settings = ChunkSettings()
    audio = torch.stack([notes(SECONDS, ours.sample_rate, seed=s)
                         for s in range(batch)]).to(device)
    clips = list(audio)

    def ours_encode() -> list[torch.Tensor]:
        return encode_many(ours, clips, settings=settings)

    def theirs_encode() -> torch.Tensor:
        with torch.inference_mode():
            return theirs.encode(audio, bandwidth=2.2).audio_codes[0]

    codes_ours, codes_theirs = ours_encode(), theirs_encode()
    with torch.inference_mode():
        latent = ours.encoder(audio)
    for b in range(batch):
        assert_same_codes_up_to_ties(ours, latent[b], codes_ours[b], codes_theirs[b])
    identical = sum(int(torch.equal(a, b)) for a, b in zip(codes_ours, codes_theirs))

    def ours_decode() -> list[torch.Tensor]:
        return decode_many(ours, list(codes_theirs), settings=settings)

    def theirs_decode() -> torch.Tensor:
        with torch.inference_mode():
            return theirs.decode(codes_theirs[None], [None])[0]

    gap = max((a - b).abs().max().item() for a, b in zip(ours_decode(), theirs_decode()))
    assert gap < 1e-4, f"decoded audio differs by {gap}"
    enc = compare(ours_encode, theirs_encode, repeats=repeats)
    dec = compare(ours_decode, theirs_decode, repeats=repeats)
    return [[f"encode, batch {batch}", f"{identical}/{batch} clips identical",
             f"{enc[1] / enc[0]:.2f}x"],
            [f"decode, batch {batch}", f"max diff {gap:.1e}", f"{dec[1] / dec[0]:.2f}x"]]


@dataclass(frozen=True)
class Batch1:
    """The inference model of ``encode_many`` (weight norm folded, time-major) and the
    inputs of each of its stages for one clip of 10 s (whole input in one pass)."""

    model: torch.nn.Module
    audio: torch.Tensor  # [1, C, L]
    latent: torch.Tensor
    codes: torch.Tensor
    front: torch.Tensor  # the encoder's front output: its LSTM's input
    quantized: torch.Tensor
    dec_front: torch.Tensor  # the decoder's front output: its LSTM's input

    @classmethod
    def of(cls, ours: Codec, device: torch.device) -> Batch1:
        model = ours.folded_copy().for_inference()
        audio = notes(SECONDS, ours.sample_rate, seed=0)[None].to(device)
        with torch.inference_mode():
            latent = model.encoder(audio)
            codes = model.quantizer.encode_latent(latent, model.quantizer.resolve_n_q(None))
            quantized = model.quantizer.decode(codes)
            return cls(model, audio, latent, codes, model.encoder.front(audio), quantized,
                       model.decoder.front(quantized))


def stage_shares(one: Batch1, repeats: int) -> str:
    """Where the time of a batch-1 encode and decode of 10 s goes: each half's
    convolution stages before and after its LSTM, the LSTM, and the quantizer (medians
    of ``repeats`` runs)."""
    model, n_q = one.model, one.codes.shape[1]
    stages = {
        "encoder front": lambda: model.encoder.front(one.audio),
        "encoder LSTM": lambda: model.encoder.recurrent_step(one.front, None),
        "encoder back": lambda: model.encoder.back(one.front),
        "quantizer encode": lambda: model.quantizer.encode_latent(one.latent, n_q),
        "quantizer decode": lambda: model.quantizer.decode(one.codes),
        "decoder front": lambda: model.decoder.front(one.quantized),
        "decoder LSTM": lambda: model.decoder.recurrent_step(one.dec_front, None),
        "decoder back": lambda: model.decoder.back(one.dec_front),
    }
    with torch.inference_mode():
        seconds = {name: median_seconds(fn, repeats) for name, fn in stages.items()}
    total = sum(seconds.values())
    return "batch 1, share of encode + decode: " + ", ".join(
        f"{name} {value / total:.0%}" for name, value in seconds.items())


def conv_flops(half: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-adds x 2 of every convolution of an encoder or decoder on input x (hooks
    on a forward pass)."""
    total = 0.0

    def count(module, inputs, output):
        nonlocal total
        # every weight meets every input frame (transposed) or every output frame
        frames = inputs[0] if isinstance(module, torch.nn.ConvTranspose1d) else output
        total += 2.0 * module.weight.numel() * frames.shape[-1] * frames.shape[0]

    hooks = [m.register_forward_hook(count) for m in half.modules()
             if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    try:
        with torch.inference_mode():
            half(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def recurrent_products(lstm: torch.nn.LSTM, frames: int, repeats: int) -> float:
    """Seconds of the matrix-vector products an LSTM at batch 1 cannot avoid: one with
    each layer's recurrent weight per frame (nothing else, no gates)."""
    vector = lstm.weight_hh_l0.new_zeros(lstm.hidden_size)
    gates = lstm.weight_hh_l0.new_empty(4 * lstm.hidden_size)
    weights = [getattr(lstm, f"weight_hh_l{k}").detach() for k in range(lstm.num_layers)]

    def products() -> None:
        for weight in weights:
            for _ in range(frames):
                torch.mv(weight, vector, out=gates)

    return median_seconds(products, repeats)


def batch1_floor(one: Batch1, ours: Codec, theirs: torch.nn.Module, repeats: int) -> str:
    """The fastest a batch-1 encode and decode can be here: the LSTM as it runs (the same
    nn.LSTM on both sides; next to it, its recurrent products alone, which bound it) plus
    every convolution's products at the rate of one large float32 product on this
    machine; and the speed-up over transformers that this allows."""
    model, audio, codes, device = one.model, one.audio, one.codes, one.audio.device
    a, b = torch.randn(40_000, 512, device=device), torch.randn(512, 128, device=device)
    rate = 2.0 * a.shape[0] * a.shape[1] * b.shape[1] / median_seconds(lambda: a @ b, repeats)
    with torch.inference_mode():
        lstm = {"encode": median_seconds(lambda: model.encoder.recurrent_step(one.front, None),
                                         repeats),
                "decode": median_seconds(lambda: model.decoder.recurrent_step(one.dec_front, None),
                                         repeats)}
        theirs_s = {"encode": median_seconds(
                        lambda: theirs.encode(audio, bandwidth=2.2), repeats),
                    "decode": median_seconds(
                        lambda: theirs.decode(codes[None], [None]), repeats)}
        lstm_layer = model.encoder.layers[model.encoder.lstm_index].lstm
        recurrent = recurrent_products(lstm_layer, one.front.shape[-1], repeats)
    layers = ours.folded_copy().for_inference(time_major=False)  # nn.Conv1d forwards
    flops = {"encode": conv_flops(layers.encoder, audio),
             "decode": conv_flops(layers.decoder, one.quantized)}
    parts = []
    for task in ("encode", "decode"):
        floor = lstm[task] + flops[task] / rate
        parts.append(f"{task}: LSTM {lstm[task]:.2f} s + {flops[task] / 1e9:.0f} GFLOP of "
                     f"convolutions at {rate / 1e9:.0f} GFLOP/s = {floor:.2f} s, "
                     f"transformers {theirs_s[task]:.2f} s: at most "
                     f"{theirs_s[task] / floor:.2f}x")
    return (f"batch 1 floor (the encoder LSTM's recurrent products alone: {recurrent:.2f} s): "
            + "; ".join(parts))


def measure_onnx(ours: Codec, folder: Path, batch: int, repeats: int) -> list[list[str]]:
    """onnxruntime on the exported graphs against mmdtok, on ``batch`` clips of 10 s."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    sessions = [onnxruntime.InferenceSession(folder / name, options,
                                             providers=["CPUExecutionProvider"])
                for name in ("encoder.onnx", "decoder.onnx")]
    settings = ChunkSettings()
    audio = torch.stack([notes(SECONDS, ours.sample_rate, seed=s) for s in range(batch)])
    clips, array = list(audio), audio.numpy()
    codes = torch.stack(encode_many(ours, clips, settings=settings))

    def ours_encode() -> list[torch.Tensor]:
        return encode_many(ours, clips, settings=settings)

    def ort_encode():
        return sessions[0].run(None, {"audio": array})[0]

    def ours_decode() -> list[torch.Tensor]:
        return decode_many(ours, list(codes), settings=settings)

    def ort_decode():
        return sessions[1].run(None, {"codes": codes.numpy()})[0]

    exported = torch.from_numpy(ort_encode())
    identical = sum(int(torch.equal(a, b)) for a, b in zip(exported, codes))
    gap = max((torch.from_numpy(a) - b).abs().max().item()
              for a, b in zip(ort_decode(), ours_decode()))
    assert gap < 1e-4, f"decoded audio differs by {gap}"
    enc = compare(ours_encode, ort_encode, repeats=repeats)
    dec = compare(ours_decode, ort_decode, repeats=repeats)
    return [[f"onnxruntime encode, batch {batch}", f"{identical}/{batch} clips identical",
             f"{enc[1] / enc[0]:.2f}x"],
            [f"onnxruntime decode, batch {batch}", f"max diff {gap:.1e}",
             f"{dec[1] / dec[0]:.2f}x"]]


def decoder_pair(model: str | None = None) -> tuple[Codec, Codec]:
    """(SEANet, frame-rate) codecs with the default codec's encoder and codebooks;
    ``model``: the frame-rate codec to time (a folder), else the shipped one."""
    from dataclasses import replace

    from mmdtok.models import ISTFTConfig
    from mmdtok.persistence import bundled_names

    names = bundled_names()
    seanet = Codec.bundled("small-music-seanet" if "small-music-seanet" in names
                           else "small-music")
    frame_rate = Codec.from_pretrained(model) if model else Codec.bundled("small-music")
    if frame_rate.config.istft is None:  # not shipped yet: random weights stand in
        torch.manual_seed(0)
        frame_rate = Codec.from_config(replace(seanet.config, istft=ISTFTConfig()))
        fixed = {k: v for k, v in seanet.state_dict().items() if not k.startswith("decoder.")}
        frame_rate = frame_rate.for_inference()
        frame_rate.load_weights({**frame_rate.state_dict(), **fixed})
    return seanet, frame_rate.for_inference()


def measure_decoders(repeats: int, model: str | None = None) -> list[list[str]]:
    from mmdtok.audio import load_audio

    seanet, frame_rate = decoder_pair(model)
    assert seanet.codes_fingerprint() == frame_rate.codes_fingerprint()
    music = sorted((Path(__file__).parents[1] / "examples" / "audio").glob("*.flac"))
    clip = load_audio(music[0], seanet.sample_rate, seanet.channels)[0]
    clip = clip.repeat(1, -(-int(SECONDS * seanet.sample_rate) // clip.shape[-1]))
    clip = clip[:, : int(SECONDS * seanet.sample_rate)]
    codes = encode_many(seanet, [clip])[0]
    params = {name: sum(p.numel() for p in codec.decoder.parameters()) / 1e6
              for name, codec in (("seanet", seanet), ("istft", frame_rate))}
    rows = []
    for batch in (1, 8):
        batch_codes = [codes] * batch
        istft_s, seanet_s = compare(lambda b=batch_codes: decode_many(frame_rate, b),
                                    lambda b=batch_codes: decode_many(seanet, b),
                                    repeats=repeats)
        sizes = f"SEANet {params['seanet']:.2f} M params, ISTFT {params['istft']:.2f} M"
        rows.append([f"decode {SECONDS:g} s, batch {batch}", sizes,
                     f"{seanet_s / istft_s:.2f}x"])
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--onnx", action="store_true",
                        help="also onnxruntime on the exported codec (CPU)")
    parser.add_argument("--decoders", action="store_true",
                        help="the default codec's frame-rate decoder vs its SEANet decoder")
    parser.add_argument("--frame-rate-model", metavar="FOLDER",
                        help="with --decoders: this codec's frame-rate decoder (e.g. "
                             "examples/train/small-music-istft)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.decoders:
        rows = measure_decoders(args.repeats, args.frame_rate_model)
        print(f"\nthe default codec's codes of {SECONDS:g} s of music, torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads\n")
        print(markdown_table(["task", "decoders", "speed-up (SEANet / ISTFT)"], rows))
        return
    device = torch.device(args.device)
    if args.onnx and device.type != "cpu":
        parser.error("--onnx compares on the CPU: use it with --device cpu")

    with tempfile.TemporaryDirectory() as folder:
        theirs = encodec_folder(ENCODEC_CONFIGS["encodec_32khz"], folder).to(device)
        ours = Codec.from_pretrained(folder).to(device)
    one = Batch1.of(ours, device)
    print(stage_shares(one, args.repeats), flush=True)
    print(batch1_floor(one, ours, theirs, args.repeats), flush=True)
    rows = []
    for batch in (1, 8):
        rows += measure(ours, theirs, batch, device, args.repeats)
        print(rows[-2], rows[-1], flush=True)
    if args.onnx:
        from mmdtok.export import export_onnx

        with tempfile.TemporaryDirectory() as folder:
            export_onnx(ours.cpu(), folder, check=False)
            for batch in (1, 8):
                rows += measure_onnx(ours, Path(folder), batch, args.repeats)
                print(rows[-2], rows[-1], flush=True)
    print(f"\n{SECONDS:g} s of 32 kHz audio, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print(markdown_table(["task", "agreement", "speed-up (other / mmdtok)"], rows))


if __name__ == "__main__":
    main()
