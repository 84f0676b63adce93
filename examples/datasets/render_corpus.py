"""Render a reproducible corpus of real music from the scores inside music21.

Each piece: a score from music21's corpus (Bach chorales, Palestrina masses, Monteverdi
madrigals, Beethoven and Mozart quartets, folk tune collections, ...), repeats expanded,
one General MIDI instrument per voice drawn from a seeded ensemble (a drum part added
to some pieces), rendered with a SoundFont, cut to at most ``max_seconds``,
peak-normalized to -1 dBFS and written as 16-bit FLAC (or WAV). The train/valid/test split is a
hash of the piece's corpus path, so it never depends on which other pieces were chosen.
A manifest (JSON lines: path, duration, source, split, instruments, drums) lists the
files. Every random choice is seeded by the recipe seed and the piece's path: re-running
gives identical files.

Renderers (each call bounded in time):
- ``timidity``: Debian's ``timidity`` with the ``fluid-soundfont-gm`` SoundFont
  (``apt-get install timidity fluid-soundfont-gm``; FluidR3 GM, MIT licence);
- ``tinysoundfont``: the ``tinysoundfont`` synthesizer (``pip install tinysoundfont
  --no-deps``; its pyaudio dependency is only for live playback) with the small
  TimGM6mb SoundFont bundled in ``pretty_midi`` (GPL-2).

    python examples/datasets/render_corpus.py --recipe small --out data/corpus
    python examples/datasets/render_corpus.py --recipe tiny --out /tmp/tiny --renderer tinysoundfont
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmdtok.train.data import hash_fraction

log = logging.getLogger("render_corpus")

# General MIDI programs (0-based), highest voice first.
ENSEMBLES: dict[str, tuple[int, ...]] = {
    "string quartet": (40, 40, 41, 42),
    "woodwinds": (73, 68, 71, 70),
    "brass": (56, 60, 57, 58),
    "piano": (0,),
    "organ": (19,),
    "choir": (52, 52, 53, 52),
    "guitars": (24, 25, 24, 32),
    "harpsichord": (6,),
    "mixed": (73, 40, 11, 42, 46, 71, 60, 32),
}
DRUMS = {"kick": 36, "snare": 38, "hihat": 42}
PEAK = 10 ** (-1 / 20)  # -1 dBFS
# Scores (not analyses such as .rntxt, nor scripts)
SCORE_SUFFIXES = {".mxl", ".xml", ".musicxml", ".krn", ".abc"}
TAIL_SECONDS = 1.0


@dataclass(frozen=True)
class Recipe:
    """What to render. ``collections`` are folders of music21's corpus."""

    pieces: int
    collections: tuple[str, ...]
    sample_rate: int = 24_000
    max_seconds: float = 60.0
    drum_probability: float = 0.25
    seed: int = 0
    audio_format: str = "flac"  # or "wav" (16-bit PCM either way)


RECIPES: dict[str, Recipe] = {
    "tiny": Recipe(pieces=5, collections=("bach",), max_seconds=12.0),
    "excerpts": Recipe(pieces=2, collections=("bach", "ryansMammoth"), max_seconds=10.0,
                       drum_probability=0.5, seed=8),
    "small": Recipe(pieces=300, collections=("bach", "palestrina", "monteverdi", "beethoven",
                                             "mozart", "haydn", "trecento", "ryansMammoth",
                                             "oneills1850", "essenFolksong", "josquin"),
                    max_seconds=45.0),
}


@dataclass(frozen=True)
class Piece:
    """One rendered file, as written to the manifest."""

    path: str
    duration: float
    source: str
    split: str
    instruments: tuple[int, ...]
    drums: bool


def split_of(source: str, seed: int) -> str:
    """train (90 %), valid (5 %) or test (5 %) from a hash of the piece's corpus path."""
    fraction = hash_fraction(f"{seed}:{source}")
    return "test" if fraction < 0.05 else "valid" if fraction < 0.10 else "train"


def candidates(recipe: Recipe) -> list[str]:
    """Corpus paths (relative, sorted, then shuffled by the seed) of the collections."""
    from music21 import common, corpus

    paths = [Path(str(p)) for p in corpus.getPaths()]
    root = Path(str(common.getCorpusFilePath()))
    chosen = sorted(p.relative_to(root).as_posix() for p in paths
                    if p.relative_to(root).parts[0] in recipe.collections
                    and p.suffix.lower() in SCORE_SUFFIXES)
    random.Random(recipe.seed).shuffle(chosen)
    return chosen


def score_to_midi(source: str, midi_path: Path, recipe: Recipe) -> tuple[tuple[int, ...], bool]:
    """Parse the score, expand repeats, and write a General MIDI file (480 ticks per
    beat) with seeded instruments and maybe drums; returns (programs, drums)."""
    import pretty_midi
    from music21 import corpus, stream

    score = corpus.parse(source)
    if isinstance(score, stream.Opus):
        if not score.scores:
            raise ValueError("empty collection")
        score = score.scores[0]
    score = score.expandRepeats()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.mid"
        score.write("midi", fp=str(raw))
        parsed = pretty_midi.PrettyMIDI(str(rescale_ticks(raw)))
    voices = [inst for inst in parsed.instruments if inst.notes and not inst.is_drum]
    if not voices:
        raise ValueError("no notes")
    rng = random.Random(f"{recipe.seed}:{source}")
    ensemble = ENSEMBLES[rng.choice(sorted(ENSEMBLES))]
    out = pretty_midi.PrettyMIDI(resolution=480)
    programs = []
    for index, voice in enumerate(voices):
        program = ensemble[index % len(ensemble)]
        track = pretty_midi.Instrument(program=program, name=voice.name or f"voice {index}")
        track.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start, n.end)
                       for n in voice.notes if n.start < recipe.max_seconds]
        out.instruments.append(track)
        programs.append(program)
    drums = rng.random() < recipe.drum_probability
    if drums:
        out.instruments.append(_drum_track(parsed, min(parsed.get_end_time(),
                                                       recipe.max_seconds)))
    out.write(str(midi_path))
    return tuple(programs), drums


def rescale_ticks(path: Path, ticks_per_beat: int = 480) -> Path:
    """Rewrite a MIDI file at ``ticks_per_beat``, in place. music21 writes 10,080 ticks
    per beat, and readers refuse long pieces at that resolution as likely corrupt."""
    import mido

    midi = mido.MidiFile(str(path))
    scale = ticks_per_beat / midi.ticks_per_beat
    for track in midi.tracks:
        absolute, previous = 0, 0
        for message in track:
            absolute += message.time
            rounded = round(absolute * scale)
            message.time, previous = rounded - previous, rounded
    midi.ticks_per_beat = ticks_per_beat
    midi.save(str(path))
    return path


def _drum_track(parsed, end: float):
    """Kick on odd beats, snare on even beats, hi-hat on every half beat."""
    import pretty_midi

    track = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    beats = [b for b in parsed.get_beats() if b < end]
    for i, beat in enumerate(beats):
        drum = DRUMS["kick"] if i % 2 == 0 else DRUMS["snare"]
        track.notes.append(pretty_midi.Note(90, drum, beat, beat + 0.1))
        following = beats[i + 1] if i + 1 < len(beats) else beat + 0.5
        for hat in (beat, (beat + following) / 2):
            track.notes.append(pretty_midi.Note(60, DRUMS["hihat"], hat, hat + 0.05))
    return track


def render_timidity(midi_path: Path, sample_rate: int, timeout: float) -> np.ndarray:
    """Mono float32 audio from timidity with the FluidR3 GM SoundFont."""
    config = Path("/etc/timidity/fluidr3_gm.cfg")
    if shutil.which("timidity") is None or not config.exists():
        raise RuntimeError("timidity with fluid-soundfont-gm is not installed: apt-get "
                           "install timidity fluid-soundfont-gm, or use --renderer "
                           "tinysoundfont")
    import soundfile

    wav = midi_path.with_suffix(".wav")
    subprocess.run(["timidity", "-c", str(config), "-Ow", "--output-mono", "-s",
                    str(sample_rate), "-idq", "-o", str(wav), str(midi_path)],
                   check=True, timeout=timeout, capture_output=True)
    audio, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    assert rate == sample_rate
    return audio[:, 0]


def render_tinysoundfont(midi_path: Path, sample_rate: int, timeout: float) -> np.ndarray:
    """Mono float32 audio from tinysoundfont with pretty_midi's TimGM6mb SoundFont."""
    import pretty_midi
    import tinysoundfont

    soundfont = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    midi = pretty_midi.PrettyMIDI(str(midi_path))
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    font = synth.sfload(str(soundfont))
    events = []
    for channel, inst in enumerate(midi.instruments):
        channel = 9 if inst.is_drum else channel % 9 + (channel >= 9)
        synth.program_select(channel, font, 128 if inst.is_drum else 0,
                             0 if inst.is_drum else inst.program, is_drums=inst.is_drum)
        for note in inst.notes:
            events += [(note.start, 1, channel, note.pitch, note.velocity),
                       (note.end, 0, channel, note.pitch, 0)]
    events.sort()
    total = int((midi.get_end_time() + TAIL_SECONDS) * sample_rate)
    if total / sample_rate > timeout * 100:
        raise RuntimeError("piece too long for the time bound")
    chunks, done = [], 0
    for time, on, channel, pitch, velocity in events + [(total / sample_rate, -1, 0, 0, 0)]:
        upto = min(total, int(time * sample_rate))
        if upto > done:
            block = np.frombuffer(synth.generate(upto - done), dtype=np.float32)
            chunks.append(block.reshape(-1, 2).mean(axis=1))
            done = upto
        if on == 1:
            synth.noteon(channel, pitch, velocity)
        elif on == 0:
            synth.noteoff(channel, pitch)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


RENDERERS = {"timidity": render_timidity, "tinysoundfont": render_tinysoundfont}
# What a score that music21 cannot parse, expand or write, or a failed render, raises: the
# piece is skipped with the reason. (Import errors and interrupts are not caught.)
SKIPPABLE = (ValueError, IndexError, KeyError, TypeError, AttributeError, ZeroDivisionError,
             EOFError, OSError, RuntimeError, subprocess.SubprocessError)


def render_piece(job: tuple[str, Recipe, str, str]) -> Piece | str:
    """Render one piece to ``out/audio/<split>/<name>.flac``; the reason as a string
    when it is skipped."""
    import soundfile
    from music21.exceptions21 import Music21Exception

    source, recipe, renderer, out = job
    split = split_of(source, recipe.seed)
    name = source.replace("/", "__").rsplit(".", 1)[0] + f".{recipe.audio_format}"
    target = Path(out) / "audio" / split / name
    try:
        with tempfile.TemporaryDirectory() as tmp:
            midi = Path(tmp) / "piece.mid"
            programs, drums = score_to_midi(source, midi, recipe)
            timeout = 30 + 2 * recipe.max_seconds
            audio = RENDERERS[renderer](midi, recipe.sample_rate, timeout)
    except (*SKIPPABLE, Music21Exception) as error:
        return f"{source}: {type(error).__name__}: {error}"
    audio = audio[: int((recipe.max_seconds + TAIL_SECONDS) * recipe.sample_rate)]
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak < 1e-4:
        return f"{source}: silent rendering"
    audio = (audio * (PEAK / peak)).astype(np.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The parent renames it once it keeps the piece (workers render ahead of need).
    soundfile.write(_partial(target), audio, recipe.sample_rate, subtype="PCM_16")
    return Piece(path=target.relative_to(out).as_posix(), duration=len(audio) /
                 recipe.sample_rate, source=f"music21:{source}", split=split,
                 instruments=programs, drums=drums)


def _partial(target: Path) -> Path:
    return target.with_suffix(f".part{target.suffix}")


def render(recipe: Recipe, out: Path, renderer: str = "timidity", jobs: int = 2,
           progress: bool = True) -> list[Piece]:
    """Render ``recipe.pieces`` pieces (skipping failures, logged) into ``out``; writes
    ``manifest.jsonl`` and ``recipe.json``; returns the pieces."""
    out.mkdir(parents=True, exist_ok=True)
    pool_jobs = [(s, recipe, renderer, str(out)) for s in candidates(recipe)]
    pieces: list[Piece] = []
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for result in pool.imap(render_piece, pool_jobs, chunksize=1):
            if isinstance(result, str):
                log.info("skipped %s", result)
                continue
            _partial(out / result.path).replace(out / result.path)
            pieces.append(result)
            if progress:
                print(f"\r{len(pieces)}/{recipe.pieces} pieces", end="", file=sys.stderr)
            if len(pieces) == recipe.pieces:
                break
    for leftover in out.glob(f"audio/*/*.part.{recipe.audio_format}"):  # rendered ahead
        leftover.unlink()
    if progress:
        print(file=sys.stderr)
    lines = [json.dumps(asdict(p), sort_keys=True) for p in sorted(pieces, key=lambda p: p.path)]
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (out / "recipe.json").write_text(json.dumps({**asdict(recipe), "renderer": renderer},
                                                indent=2, sort_keys=True) + "\n")
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="small")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--renderer", choices=sorted(RENDERERS), default="timidity")
    parser.add_argument("--sample-rate", type=int, help="override the recipe's rate")
    parser.add_argument("--format", choices=["flac", "wav"], default="flac")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-v", "--verbose", action="store_true", help="log skipped pieces")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    recipe = RECIPES[args.recipe]
    recipe = Recipe(**{**asdict(recipe), "audio_format": args.format,
                       "sample_rate": args.sample_rate or recipe.sample_rate})
    pieces = render(recipe, args.out, args.renderer, args.jobs)
    hours = sum(p.duration for p in pieces) / 3600
    print(f"{len(pieces)} pieces, {hours:.2f} h, manifest {args.out / 'manifest.jsonl'}")


if __name__ == "__main__":
    main()
