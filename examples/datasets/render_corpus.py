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
  TimGM6mb SoundFont bundled in ``pretty_midi`` (GPL-2);
- ``additive``: additive synthesis in numpy (harmonics and envelopes per instrument
  family, noise drums), nothing to install beyond the ``dev`` extra; cruder timbres.

``--renderer auto`` (the default) takes the first of these that this machine has and
says which.

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

from mmdtok.train.data import corpus_split

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
    return corpus_split(source, seed)


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
        raise ValueError("piece too long for the time bound")
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


HARMONICS = np.arange(1, 25)
# Spectral roll-off (amplitude of harmonic h = h ** -rolloff) per General MIDI family
# (program // 8): piano, chromatic percussion, organ, guitar, bass, strings, ensemble,
# brass, reed, pipe, synth lead, synth pad, effects, ethnic, percussive, sound effects.
ROLLOFF = (1.6, 2.2, 0.9, 1.4, 1.8, 1.0, 1.1, 0.8, 0.9, 2.0, 0.8, 1.2, 1.2, 1.4, 2.0, 1.5)
# Time constant (s) of the exponential decay per family; long for sustained families.
DECAY = (1.2, 0.6, 8.0, 1.0, 1.0, 6.0, 6.0, 4.0, 4.0, 5.0, 5.0, 8.0, 3.0, 1.5, 0.3, 1.0)


def render_additive(midi_path: Path, sample_rate: int, timeout: float) -> np.ndarray:
    """Mono float32 audio by additive synthesis, with numpy only (no SoundFont, nothing
    to install): each note is 24 harmonics whose roll-off and decay depend on the General
    MIDI family of its instrument, plus broadband noise 30 dB below (bow, breath,
    hammer), with a 10 ms attack and a 60 ms release; drums are seeded noise bursts (a
    pitch sweep for the kick). Cruder than a SoundFont, still the
    score's music: the fallback when neither timidity nor tinysoundfont is there."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(str(midi_path))
    total = int((midi.get_end_time() + TAIL_SECONDS) * sample_rate)
    if total / sample_rate > timeout * 100:
        raise ValueError("piece too long for the time bound")
    out = np.zeros(total, np.float64)
    release, attack = 0.06, 0.01
    for inst in midi.instruments:
        family = inst.program // 8
        amplitudes = HARMONICS ** -ROLLOFF[family]
        for note in inst.notes:
            start = int(note.start * sample_rate)
            length = min(total - start, int((note.end - note.start + release) * sample_rate))
            if length <= 0:
                continue
            t = np.arange(length) / sample_rate
            gain = note.velocity / 127
            if inst.is_drum:
                wave = _drum(note.pitch, t, start)
            else:
                f0 = pretty_midi.note_number_to_hz(note.pitch)
                kept = HARMONICS * f0 < 0.45 * sample_rate
                phase = 2 * np.pi * f0 * t
                wave = amplitudes[kept] @ np.sin(HARMONICS[kept, None] * phase) / 3
                # Bow, breath or hammer noise: broadband, 30 dB below the tone.
                wave += 0.03 * np.random.default_rng([note.pitch, start]).standard_normal(
                    length)
                held = note.end - note.start
                envelope = np.minimum(t / attack, 1.0) * np.exp(-t / DECAY[family])
                envelope *= np.clip((held + release - t) / release, 0.0, 1.0)
                wave = wave * envelope
            out[start : start + length] += gain * wave
    return out.astype(np.float32)


def _drum(pitch: int, t: np.ndarray, start: int) -> np.ndarray:
    """A drum hit over ``t``: a kick's falling sine, or noise decaying fast (snare, hats),
    seeded by the pitch and the start sample so that every rendering is identical."""
    if pitch in (35, 36):
        return np.sin(2 * np.pi * (50 * t + 60 * (1 - np.exp(-t / 0.03)) * 0.03)) * np.exp(
            -t / 0.15)
    noise = np.random.default_rng([pitch, start]).standard_normal(t.shape)
    return 0.3 * noise * np.exp(-t / (0.03 if pitch in (42, 44, 46) else 0.08))


RENDERERS = {"timidity": render_timidity, "tinysoundfont": render_tinysoundfont,
             "additive": render_additive}


def available_renderer() -> str:
    """The best renderer this machine has: timidity with FluidR3 GM, else tinysoundfont,
    else additive synthesis (always there with the ``dev`` extra)."""
    if shutil.which("timidity") and Path("/etc/timidity/fluidr3_gm.cfg").exists():
        return "timidity"
    import importlib.util

    if importlib.util.find_spec("tinysoundfont"):
        return "tinysoundfont"
    return "additive"
# What a score that music21 cannot parse, expand or write as MIDI raises (with
# music21's own exceptions), and a renderer that fails on or times out over a piece: the
# piece is skipped with the reason. Anything else (a programming error, a full disk, a
# missing program) stops the run with its traceback.
SKIPPABLE = (ValueError, IndexError, KeyError, ZeroDivisionError, EOFError,
             subprocess.CalledProcessError, subprocess.TimeoutExpired)


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
    skipped: list[str] = []
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for result in pool.imap(render_piece, pool_jobs, chunksize=1):
            if isinstance(result, str):
                log.info("skipped %s", result)
                skipped.append(result)
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
    if skipped:
        print(f"{len(skipped)} pieces skipped (-v lists the reasons), e.g. {skipped[0]}",
              file=sys.stderr)
    lines = [json.dumps(asdict(p), sort_keys=True) for p in sorted(pieces, key=lambda p: p.path)]
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (out / "recipe.json").write_text(json.dumps({**asdict(recipe), "renderer": renderer},
                                                indent=2, sort_keys=True) + "\n")
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="small")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--renderer", choices=["auto", *sorted(RENDERERS)], default="auto",
                        help="auto: timidity if installed, else tinysoundfont, else "
                             "additive synthesis")
    parser.add_argument("--sample-rate", type=int, help="override the recipe's rate")
    parser.add_argument("--format", choices=["flac", "wav"], default="flac")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-v", "--verbose", action="store_true", help="log skipped pieces")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    recipe = RECIPES[args.recipe]
    recipe = Recipe(**{**asdict(recipe), "audio_format": args.format,
                       "sample_rate": args.sample_rate or recipe.sample_rate})
    renderer = available_renderer() if args.renderer == "auto" else args.renderer
    if renderer == "timidity" and available_renderer() != "timidity":
        parser.error("timidity with fluid-soundfont-gm is not installed: apt-get install "
                     "timidity fluid-soundfont-gm, or pip install tinysoundfont --no-deps "
                     "(or --renderer additive)")
    print(f"renderer: {renderer}", file=sys.stderr)
    pieces = render(recipe, args.out, renderer, args.jobs)
    hours = sum(p.duration for p in pieces) / 3600
    print(f"{len(pieces)} pieces, {hours:.2f} h, manifest {args.out / 'manifest.jsonl'}")
    if not pieces:
        raise SystemExit("error: no piece was rendered (-v lists why)")


if __name__ == "__main__":
    main()
