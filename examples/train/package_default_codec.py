"""Turn a finished train-codec run into the codec shipped inside the package, measure it
on held-out music and write its model card.

    python examples/train/package_default_codec.py RUN_DIR data/real/manifest.jsonl \\
        data/corpus/manifest.jsonl --out src/mmdtok/weights/small-music --half \\
        --evaluate data/real/manifest.jsonl --seconds 10 \\
        --compare examples/train/small-music-renders

(``--reports A.json B.json`` takes the ``--evaluate`` table from ``mmdtok evaluate
--json`` reports already written.)

Writes OUT/config.json + OUT/model.safetensors (weight norm folded; float16 with
``--half``, loaded back as float32), OUT/quality.json (every figure, machine-readable) and
OUT/MODEL_CARD.md. Every figure is measured on the weights as written, loaded back the way
users load them: the test split of each corpus the run trained on (files never seen in
training, each coded whole), at all bitrates (the first 1..K codebooks); the excerpts in
examples/audio (which the package tests measure again); and, with ``--evaluate``,
``mmdtok evaluate``'s table on a manifest's test split (SI-SDR, mel and STFT distances,
ViSQOL) next to Opus and to the codecs named by ``--compare``. The model card takes every
figure, the architecture and the corpus facts from quality.json; ``--card-only`` writes it
again from OUT/quality.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import soundfile
import torch

from mmdtok import Codec
from mmdtok.evaluation import evaluate, parse_baselines
from mmdtok.metrics import normalized_pairwise_dependence
from mmdtok.paths import read_manifest
from mmdtok.persistence import load_pretrained, save_pretrained
from mmdtok.train.checkpoint import load_checkpoint
from mmdtok.train.config import load_config
from mmdtok.train.data import ClipSampler, find_audio
from mmdtok.train.folder import RunFolder
from mmdtok.train.validation import (
    evaluate_bitrates,
    evaluate_codec,
    load_clips,
    recalibrate_latent_norm,
)

ROOT = Path(__file__).parents[2]
EXCERPTS = sorted((ROOT / "examples" / "audio").glob("*.flac"))
WINDOW_SECONDS = 10.0  # code windows for the dependence measure


def calibration_batches(codec: Codec, run_dir: Path, manifests: list[Path], count: int):
    """The batches the trainer recalibrates on: beyond the last step, rank 0."""
    settings = load_config(RunFolder(run_dir).settings)
    files = [f for f in find_audio(manifests) if f.split == "train"]
    sampler = ClipSampler.from_config(files, settings, sample_rate=codec.sample_rate,
                                      channels=codec.channels)
    return (sampler.batch(settings.steps + i, rank=0) for i in range(count))


def export(run_dir: Path, manifests: list[Path], out: Path, half: bool, calibrate: int
           ) -> tuple[Codec, float | None]:
    """The shipped codec, loaded back from ``out``, and (with ``half``) the largest change
    of SI-SDR on the excerpts that storing float16 weights makes."""
    codec = Codec.from_pretrained(run_dir)  # the moving average, weight norm folded
    if calibrate:  # what train-codec does at the end of a run (calibration_batches)
        recalibrate_latent_norm(codec, calibration_batches(codec, run_dir, manifests,
                                                           calibrate))
    float32 = copy.deepcopy(codec) if half else None  # the reference for the float16 change
    save_pretrained(codec.half() if half else codec, out)  # weights saved as they are ...
    shipped = load_pretrained(out)  # ... and what users get: float32, eval mode
    gap = None
    if float32 is not None:
        clips = load_clips(EXCERPTS, shipped.sample_rate, shipped.channels)
        gap = max(abs(evaluate_codec(shipped, [c])[0].si_sdr
                      - evaluate_codec(float32, [c])[0].si_sdr) for c in clips)
    return shipped, gap


def architecture(codec: Codec) -> dict:
    """What the model card says of the network, from the codec's own config."""
    seanet = codec.config.seanet
    return {"sample_rate": codec.sample_rate, "channels": codec.channels,
            "n_filters": seanet.n_filters, "ratios": list(seanet.ratios),
            "lstm_layers": seanet.lstm_layers, "dimension": seanet.dimension,
            "num_codebooks": codec.num_codebooks, "codebook_size": codec.codebook_size,
            "frame_rate": codec.frame_rate, "quantizer": codec.config.quantizer["kind"],
            "causal": seanet.causal, "pad_mode": seanet.pad_mode,
            "istft": codec.config.istft.to_dict() if codec.config.istft else None,
            "hop_length": codec.hop_length,
            "decoder_parameters": sum(p.numel() for p in codec.decoder.parameters())}


def corpus_facts(manifest: Path) -> dict:
    """What the card says of a corpus, from its manifest and its files: hours in all
    splits, the longest file, files per split, and (recorded music) its packages and
    licences."""
    entries = read_manifest(manifest)
    durations = [soundfile.info(str(e["path"])).duration for e in entries]
    splits = [e.get("split", "train") for e in entries]
    facts = {"manifest": _relative(manifest), "hours": sum(durations) / 3600,
             "longest_seconds": max(durations), "pieces": len(durations),
             "splits": {s: splits.count(s) for s in sorted(set(splits))},
             "recorded": any("package" in e for e in entries)}
    if facts["recorded"]:
        facts["packages"] = sorted({e["package"] for e in entries if "package" in e})
        facts["licenses"] = sorted({e["license"] for e in entries if "license" in e})
    return facts


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@torch.inference_mode()
def code_dependence(codec: Codec, clips: list[torch.Tensor]) -> dict[str, float]:
    """The paper's normalized pairwise dependence of the codes, delayed and parallel, on
    windows of ``WINDOW_SECONDS`` cut from every clip."""
    frames = round(WINDOW_SECONDS * codec.frame_rate)
    windows = []
    for clip in clips:
        codes = codec.encode(clip[None])[0]
        windows += [codes[:, i : i + frames] for i in range(0, codes.shape[-1] - frames + 1,
                                                             frames)]
    stacked = torch.stack(windows)
    return {pattern: float(normalized_pairwise_dependence(stacked, codec.codebook_size,
                                                          pattern))
            for pattern in ("delay", "parallel")} | {"windows": len(windows)}


def training_facts(run_dir: Path) -> dict:
    run = RunFolder(run_dir)
    checkpoint = load_checkpoint(run.checkpoint)
    started, ended = run.settings.stat().st_mtime, run.checkpoint.stat().st_mtime
    return {"settings": json.loads(run.settings.read_text()), "steps": int(checkpoint["step"]),
            "skipped": int(checkpoint["skipped"]), "hours": (ended - started) / 3600}


def test_split(codec: Codec, manifest: Path) -> dict:
    """Quality of ``codec`` on the test split of ``manifest``, each file coded whole, at
    every bitrate, with its codebook use and the dependence of its codes."""
    test = [e["path"] for e in read_manifest(manifest) if e.get("split") == "test"]
    clips = load_clips(test, codec.sample_rate, codec.channels)
    qualities, _ = evaluate_bitrates(codec, clips, range(1, codec.num_codebooks + 1))
    by_bitrate = {n_q: {"kbps": n_q * math.log2(codec.codebook_size) * codec.frame_rate
                        / 1000, "si_sdr": q.si_sdr, "mel_distance": q.mel_distance}
                  for n_q, q in qualities.items()}
    full = qualities[codec.num_codebooks]
    return {"all": full.as_dict() | {"clips": full.clips, "seconds": full.seconds},
            "by_codebooks": by_bitrate, "dependence": code_dependence(codec, clips)}


def evaluation_table(codec: Codec, manifest: Path, seconds: float | None,
                     compare: list[str], opus: str = "6,12") -> dict:
    """``mmdtok evaluate``'s rows on the test split of ``manifest``: ``codec`` at every
    bitrate, Opus at the ``opus`` bitrates (kbps), and each codec of ``compare`` at every
    bitrate."""
    systems = [(f"mmdtok:{codec.config.name}", codec, None, f"opus:{opus}")] + [
        (_relative_name(other), model, None, "")
        for other, model in ((o, Codec.from_pretrained(o)) for o in compare)]
    rows, notes = [], []
    for name, model, n_q, baselines in systems:
        report = evaluate(model, [manifest], n_q=n_q, split="test", seconds=seconds,
                          baselines=parse_baselines(baselines), name=name)
        if report.failed:
            raise SystemExit(f"evaluation failed on {report.failed}")
        rows += [{"system": r.system, "kbps": r.kbps, "summary": r.summary()}
                 for r in report.rows]
        notes += report.notes
    return {"manifest": _relative(manifest), "split": "test", "seconds": seconds,
            "files": len(report.rows[0].files), "rows": rows, "notes": notes}


def evaluation_from_reports(reports: list[Path], manifest: Path, seconds: float | None
                            ) -> dict:
    """The same table from ``mmdtok evaluate --json`` reports already written (the
    manifest's test split, the same excerpt length), in the order given: ViSQOL is
    the slow part, and this scores nothing again."""
    rows, notes, files = [], [], set()
    for path in reports:
        report = json.loads(path.read_text())
        if report.get("failed"):
            raise SystemExit(f"{path}: the evaluation failed on {report['failed']}")
        rows += [{"system": r["system"], "kbps": r["kbps"], "summary": r["summary"]}
                 for r in report["rows"]]
        notes += report.get("notes", [])
        files |= {len(r["files"]) for r in report["rows"]}
    if len(files) != 1:
        raise SystemExit(f"the reports score different numbers of files: {sorted(files)}")
    return {"manifest": _relative(manifest), "split": "test", "seconds": seconds,
            "files": files.pop(), "rows": rows, "notes": notes}


def _relative_name(name: str) -> str:
    path = Path(name)
    return _relative(path) if path.exists() else name


@torch.inference_mode()
def streaming_facts(codec: Codec, clips: list[torch.Tensor], piece_ms: float = 20.0) -> dict:
    """For a causal codec: its start-up waits, and how each excerpt streamed through the
    encoder and the decoder in ``piece_ms`` pieces compares with the whole pass."""
    from mmdtok.streaming import StreamingDecoder, StreamingEncoder

    piece = round(piece_ms * codec.sample_rate / 1000)
    equal, total, diff = 0, 0, 0.0
    for clip in clips:
        audio = clip[None]
        encoder, decoder = StreamingEncoder(codec), StreamingDecoder(codec)
        codes = [encoder.push(audio[..., i : i + piece])
                 for i in range(0, audio.shape[-1], piece)] + [encoder.flush()]
        out = torch.cat([decoder.push(c) for c in codes if c.shape[-1]]
                        + [decoder.flush()], -1)
        whole = codec.encode(audio)
        streamed = torch.cat(codes, -1)
        equal, total = equal + int((streamed == whole).sum()), total + whole.numel()
        diff = max(diff, float((out - codec.decode(whole)).abs().max()))
    return {"piece_ms": piece_ms, "encoder_startup_samples": encoder.startup,
            "decoder_startup_frames": decoder.startup, "codes_equal": equal / total,
            "audio_max_abs_diff": diff}


def measure(codec: Codec, manifests: list[Path]) -> dict:
    excerpts = load_clips(EXCERPTS, codec.sample_rate, codec.channels)
    files = find_audio(manifests)
    streaming = ({"streaming": streaming_facts(codec, excerpts)}
                 if codec.config.seanet.causal else {})
    return streaming | {"test": {_relative(m): test_split(codec, m) for m in manifests},
            "excerpts": {path.name: evaluate_codec(codec, [clip])[0].as_dict()
                         for path, clip in zip(EXCERPTS, excerpts)},
            "train_files": sum(f.split == "train" for f in files),
            "window_seconds": WINDOW_SECONDS,
            "corpora": [corpus_facts(m) for m in manifests]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("manifests", type=Path, nargs="+",
                        help="the manifests the run trained on (their test splits)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--half", action="store_true", help="store float16 weights")
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="recalibrate the latent norm on N training batches first "
                             "(for runs made before train-codec did it itself)")
    parser.add_argument("--evaluate", type=Path, metavar="MANIFEST",
                        help="also run mmdtok evaluate on this manifest's test split")
    parser.add_argument("--seconds", type=float, default=None,
                        help="excerpt length for --evaluate (the middle of each file)")
    parser.add_argument("--compare", nargs="*", default=[], metavar="MODEL",
                        help="codecs scored next to this one by --evaluate")
    parser.add_argument("--reports", type=Path, nargs="+", default=[], metavar="JSON",
                        help="with --evaluate: take its table from these `mmdtok evaluate "
                             "MANIFEST --split test --json` reports instead of scoring "
                             "again")
    parser.add_argument("--opus", default="6,12", metavar="KBPS",
                        help="Opus bitrates scored by --evaluate (comma-separated)")
    parser.add_argument("--card-only", action="store_true",
                        help="write OUT/MODEL_CARD.md again from OUT/quality.json")
    args = parser.parse_args()
    if args.card_only:
        figures = json.loads((args.out / "quality.json").read_text())
    else:
        start = time.time()
        codec, gap = export(args.run_dir, args.manifests, args.out, args.half,
                            args.calibrate)
        figures = {"codec": codec.config.name, "fingerprint": codec.fingerprint(),
                   "half": args.half, "half_si_sdr_gap": gap,
                   "recalibrated_on": args.calibrate,
                   "training": training_facts(args.run_dir),
                   "architecture": architecture(codec),
                   "bitrate_kbps": codec.num_codebooks * math.log2(codec.codebook_size)
                   * codec.frame_rate / 1000,
                   "parameters": sum(p.numel() for p in codec.parameters())} | measure(
                       codec, args.manifests)
        if args.evaluate:
            figures["evaluation"] = (
                evaluation_from_reports(args.reports, args.evaluate, args.seconds)
                if args.reports else
                evaluation_table(codec, args.evaluate, args.seconds, args.compare, args.opus))
        print(f"measured in {time.time() - start:.0f} s")
    (args.out / "quality.json").write_text(json.dumps(figures, indent=2) + "\n")
    (args.out / "MODEL_CARD.md").write_text(model_card(figures))
    print(json.dumps(figures, indent=2))


QUANTIZER_NAMES = {"rvq": "residual VQ", "pvq": "product VQ", "fsq": "FSQ"}


def _networks(a: dict) -> str:
    """The card's words for the encoder and decoder."""
    seanet = (f"at {a['n_filters']} filters, strides {_ratios(a['ratios'])}, "
              f"{_count(a['lstm_layers'], 'LSTM layer')}, {a['dimension']}-dim latent")
    istft = a.get("istft")
    if not istft:
        return f"SEANet encoder and decoder (EnCodec's architecture\n{seanet})"
    return (f"SEANet encoder (EnCodec's architecture {seanet}); a frame-rate decoder\n"
            f"(Vocos' design: {istft['blocks']} ConvNeXt blocks of width {istft['dim']} "
            f"(MLP {istft['intermediate']}) at the frame rate, then an inverse STFT of "
            f"{istft['n_fft']} samples at the hop of {a['hop_length']}; "
            f"{a['decoder_parameters'] / 1e6:.2f} M parameters)")


def _ratios(ratios: list[int]) -> str:
    return "-".join(map(str, ratios))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _corpus_line(c: dict) -> str:
    """One corpus, as the card's data list says it."""
    size = (f"{c['pieces']} files, {c['hours']:.1f} h in all splits (the longest "
            f"{c['longest_seconds']:.0f} s; {c['splits'].get('train', 0)} train, "
            f"{c['splits'].get('valid', 0)} valid, {c['splits'].get('test', 0)} test)")
    if c["recorded"]:
        return (f"`{c['manifest']}`: recorded music, the `real` recipe of\n"
                f"  `examples/datasets/real_corpus.py` (game soundtracks from the Debian "
                f"packages {', '.join(c['packages'])}): {size}")
    return (f"`{c['manifest']}`: the `small` recipe of `examples/datasets/render_corpus.py`"
            f" (music21 scores:\n  Palestrina, Bach, Monteverdi, Beethoven, folk tunes, "
            f"... rendered with General MIDI\n  instruments by timidity and the FluidR3 GM "
            f"SoundFont): {size}")


def _cell(summary: dict | None, digits: int) -> str:
    if summary is None:
        return "-"
    return f"{summary['mean']:.{digits}f} ± {summary['sd']:.{digits}f}"


def _evaluation_section(e: dict | None) -> str:
    if not e:
        return ""
    rows = "\n".join(
        f"| {r['system']} | {r['kbps']:.2f} | {_cell(r['summary']['si_sdr'], 2)} | "
        f"{_cell(r['summary']['mel_distance'], 3)} | {_cell(r['summary']['stft_distance'], 3)}"
        f" | {_cell(r['summary']['visqol'], 2)} |" for r in e["rows"])
    excerpt = (f"the {e['seconds']:g} s in the middle of each" if e["seconds"]
               else "each whole")
    notes = "".join(f"\n{n}." for n in e["notes"])
    return f"""
## Next to Opus, on recorded music
`mmdtok evaluate {e['manifest']} --split {e['split']}`: {excerpt} of the
{e['files']} files of that test split, mean ± standard deviation over files. SI-SDR in dB
(higher is better); mel distance and multi-resolution log-STFT distance (lower is better);
ViSQOL v3 audio mode (MOS-LQO, 1 to 5, higher is better). Opus runs through `opusenc
--hard-cbr` and `opusdec`.{notes}

| system | kbps | SI-SDR (dB) | mel distance | STFT distance | ViSQOL |
|---|---|---|---|---|---|
{rows}
"""


def _streaming_section(f: dict, a: dict) -> str:
    st = f.get("streaming")
    if not st:
        return ""
    frame_ms = 1000 / a["frame_rate"]
    startup_ms = (1000 * st["encoder_startup_samples"] / a["sample_rate"] - frame_ms
                  + frame_ms * (st["decoder_startup_frames"] - 1))
    padding = ("zero-padded, so nothing waits at the start" if a.get("pad_mode") == "constant"
               else f"padded by {a.get('pad_mode')}")
    return f"""## Streaming
Causal convolutions ({padding}): a frame's codes come out with its last sample, and its
audio as soon as its codes are in. Latency: one frame ({frame_ms:.1f} ms) plus a start-up
of {startup_ms:.1f} ms (the encoder's first codes after {st['encoder_startup_samples']}
samples, the decoder's first audio after {_count(st['decoder_startup_frames'], 'frame')}).
The excerpts below streamed through `StreamingEncoder` and `StreamingDecoder` in
{st['piece_ms']:g} ms pieces: {st['codes_equal']:.2%} of the codes equal to the whole
pass's (the rest: float ties), the audio within {st['audio_max_abs_diff']:.1e} of the whole
decoding. `python examples/stream_file.py song.wav` streams a file and reports latency
and real-time factor; `benchmarks/bench_streaming.py --model mmdtok:{f['codec']}` the
speed against the whole pass.

"""


def _loss_weights(weights: dict) -> str:
    names = {"l1": "L1 on the waveform", "mel": "the multi-scale mel loss",
             "stft": "the multi-resolution STFT loss", "adversarial": "adversarial",
             "features": "feature matching"}
    return ", ".join(f"{names.get(k, k)} ({v:g})" for k, v in weights.items()
                     if k not in {"adversarial", "features"})


def model_card(f: dict) -> str:
    """The model card, every figure and fact taken from ``f`` (quality.json)."""
    t, s, a = f["training"], f["training"]["settings"], f["architecture"]
    k, size = a["num_codebooks"], a["codebook_size"]
    tables = []
    for manifest, m in f["test"].items():
        rows = "\n".join(f"| {n} | {v['kbps']:.2f} | {v['si_sdr']:.2f} | "
                         f"{v['mel_distance']:.3f} |" for n, v in m["by_codebooks"].items())
        use = ", ".join(f"{m['all'][f'perplexity_{i}']:.0f}" for i in range(k))
        dep = m["dependence"]
        tables.append(f"""`{manifest}`, test split: {m['all']['clips']} files never used in
training, {m['all']['seconds'] / 60:.1f} min in all.

| codebooks | kbps | SI-SDR (dB) | mel distance |
|---|---|---|---|
{rows}

Codebook perplexities (of {size:,}) with all codebooks: {use}. Normalized pairwise
dependence of the codes (the paper's measure, plug-in, on {dep['windows']} windows of
{f['window_seconds']:g} s): {dep['delay']:.4f} at the steps a delay-pattern LM predicts
together, {dep['parallel']:.4f} within a frame.""")
    excerpts = "\n".join(f"| `{name}` | {v['si_sdr']:.2f} | {v['mel_distance']:.3f} |"
                         for name, v in f["excerpts"].items())
    independence = (f"on: preset `{s['independence_preset']}`, a macro-batch of "
                    f"{s['independence_every']} steps, weight {s['independence_weight']:g}"
                    if s["independence"] else "off")
    adversarial = ("from step " + str(s["adversarial_from"])
                   if s["adversarial_from"] < s["steps"] else "off")
    schedule = (f" of a {s['steps']:,}-step schedule (stopped there)"
                if s["steps"] > t["steps"] else "")
    start = (f"\n- Started from the weights of `{s['init_from']}`." if s.get("init_from")
             else "")
    if s.get("trainable") == "decoder":
        fresh = " (a new decoder kind: trained from scratch)" if s.get("decoder") else ""
        start = (f"\n- The encoder and codebooks of `{s['init_from']}`, held fixed "
                 f"(`trainable=decoder`): the codes are that codec's, and its token files "
                 f"decode with this one. Only the decoder trained{fresh}.")
    sampling = ("each crop's file drawn in proportion to its duration"
                if s.get("sampling") == "duration" else "each crop's file drawn uniformly")
    recal = (f",\n  its latent norm recalibrated on {f['recalibrated_on']} training "
             "batches of its own encoder" if f["recalibrated_on"] else "")
    gap = f.get("half_si_sdr_gap")
    half = ("" if not f["half"] else ";\n  stored as float16" + (
        "" if gap is None else f" (on the excerpts below, float32 weights give SI-SDR within "
        f"{gap:.2f} dB)"))
    channels = {1: "mono", 2: "stereo"}.get(a["channels"], f"{a['channels']}-channel")
    if a.get("causal"):
        role = "the streaming codec of mmdtok"
        purpose = (f"`mmdtok encode --model mmdtok:{f['codec']}` and the streaming API "
                   "(`mmdtok.streaming`) work")
    else:
        role = "the default codec of mmdtok"
        purpose = "`mmdtok encode song.wav` works"
    if f.get("role"):  # a codec kept beside the default (quality.json says what it is)
        model = f.get("load", f"mmdtok:{f['codec']}")
        role, purpose = f["role"], f"`mmdtok encode --model {model}` works"
    data = "\n".join(f"  - {_corpus_line(c)}" for c in f["corpora"])
    licenses = sorted({lic for c in f["corpora"] for lic in c.get("licenses", [])})
    recorded = (f" Recorded training audio: under the licences its packages state "
                f"({', '.join(licenses)}; per file in the manifest)." if licenses else "")
    where = ("kept in the repository" if str(f.get("load", "")).startswith("examples/")
             else "shipped inside the package")
    title = Path(f["load"]).name if f.get("load") else f["codec"]
    return f"""# {title}: {role}

A small {channels} {a['sample_rate'] / 1000:g} kHz music codec \
({f['parameters'] / 1e6:.2f} M parameters), {where} so that
{purpose} offline. {_networks(a)},
{QUANTIZER_NAMES.get(a['quantizer'], a['quantizer'])} with {k} codebooks of {size:,} entries
at {a['frame_rate']:g} frames/s: {f['bitrate_kbps']:.1f} kbps with all codebooks, and any
prefix of the codebooks is a lower bitrate. Weights: weight norm folded, stored as
{"float16" if f['half'] else "float32"}, fingerprint `{f['fingerprint']}`.

It is a small codec trained for {t['steps']:,} steps on a CPU: good enough to try the
tools, the token format and the language-model examples on real music, not a
replacement for EnCodec or DAC in production.

## Training
- Data ({f['train_files']} files in the train splits):
{data}{start}
- {t['steps']:,} steps{schedule} ({t['skipped']} skipped) of `mmdtok train-codec`, batch
  {s['batch_size']} x {s['segment_seconds']:g} s random crops ({sampling}),
  Adam (betas {s['betas'][0]:g}, {s['betas'][1]:g}), lr {s['lr']:g} with {s['warmup_steps']}
  warmup steps and a {s['schedule']} schedule, weight moving average {s['ema_decay']:g}
  (exported).
- Losses through the gradient balancer: {_loss_weights(s['weights'])}; the commitment loss;
  adversarial and feature-matching losses {adversarial}.
- Independence loss: {independence},
  delay pattern.
- Time: {t['hours']:.2f} h of wall-clock time.
- Export: the weight moving average{recal}, weight norm folded{half}.

{_streaming_section(f, a)}## Quality on held-out music
Each file encoded and decoded whole.

{chr(10).join(tables)}
{_evaluation_section(f.get("evaluation"))}
## The excerpts in `examples/audio`
(the package tests measure these again)

| excerpt | SI-SDR (dB) | mel distance |
|---|---|---|
{excerpts}

SI-SDR: scale-invariant signal-to-distortion ratio (higher is better). Mel distance:
EnCodec's multi-scale mel loss, normalized (`mmdtok.losses.spectral.mel_distance`; lower
is better). Figures from `examples/train/package_default_codec.py`, also in
`quality.json` beside this card.

## Licence
Weights: MIT, as mmdtok. Rendered training audio: public-domain compositions from the
music21 corpus, rendered with the MIT-licensed FluidR3 GM SoundFont.{recorded}
"""


if __name__ == "__main__":
    main()
