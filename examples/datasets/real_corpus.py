"""The ``real`` recipe: a corpus of recorded music from Debian's game-music packages.

    apt-get install ufoai-music warzone2100-music nexuiz-music hyperrogue-music \
        planetblupi-music-ogg drascula-music asc-music fb-music-high
    python examples/datasets/real_corpus.py --out data/real

Only these eight packages are used. Every track they install (Ogg Vorbis, Ogg Opus, mp3;
the tracks inside ``.pk3`` archives are extracted to ``OUT/audio/``, bytes unchanged) is
decoded with soundfile; a track that does not decode (a tracker module), lasts less than
``--min-seconds`` (jingles, sound effects) or is byte for byte another track (the same
music installed once per language) is skipped with the reason. The split is the
hash rule of ``render_corpus.py`` on the track's name (``debian:PACKAGE/PATH``): about 90 %
train, 5 % valid, 5 % test, the same whatever else is installed. ``OUT/manifest.jsonl``
lists each track (path, duration, sample rate, channels, split, source, package, licence
from the package's copyright file, copyright file); files installed by the packages are
referenced where they lie. Mix it with the rendered corpus by passing both manifests to
``mmdtok train-codec``, or by ``--merge data/corpus/manifest.jsonl`` (one manifest whose
paths are absolute).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

PACKAGES = ("ufoai-music", "warzone2100-music", "nexuiz-music", "hyperrogue-music",
            "planetblupi-music-ogg", "drascula-music", "asc-music", "fb-music-high")
AUDIO = {".ogg", ".opus", ".mp3", ".flac", ".wav"}
ARCHIVES = {".pk3"}
TRACKERS = {".xm", ".mod", ".it", ".s3m"}


@dataclass(frozen=True)
class Track:
    """One manifest line."""

    path: str
    duration: float
    sample_rate: int
    channels: int
    split: str
    source: str
    package: str
    license: str
    copyright: str


def split_of(source: str, seed: int = 0) -> str:
    """The rendered corpus's rule: train (90 %), valid (5 %), test (5 %) by a hash."""
    from mmdtok.train.data import corpus_split

    return corpus_split(source, seed)


def installed_files(package: str) -> list[Path]:
    """The regular files a Debian package installed (``dpkg -L``); ValueError when it
    is not installed."""
    result = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise ValueError(f"{package} is not installed (apt-get install {package})")
    return sorted(p for p in map(Path, result.stdout.splitlines())
                  if p.is_file() and "/usr/share/doc/" not in p.as_posix())


def licences(copyright_file: Path) -> list[tuple[list[str], str]]:
    """(file globs, licence) per stanza of a machine-readable (DEP-5) copyright file, in
    file order; for a free-form one, one stanza for every file with the licence the text
    names (GPL-2+ and the like), or "see copyright file"."""
    text = copyright_file.read_text(errors="replace")
    if not text.startswith("Format:"):
        return [(["*"], _free_form_licence(text))]
    stanzas, globs, field = [], None, None
    for line in text.splitlines() + [""]:
        if not line.strip():
            globs, field = None, None
            continue
        if not line[0].isspace():
            field, _, value = line.partition(":")
            value = value.strip()
            if field == "Files":
                globs = value.split()
            elif field == "License" and globs is not None:
                stanzas.append((globs, value.split()[0] if value else "unknown"))
        elif field == "Files" and globs is not None:
            globs += line.split()
    return stanzas


def _free_form_licence(text: str) -> str:
    flat = " ".join(text.split())
    if "GNU General Public License" in flat:
        later = "or (at your option) any later" in flat or "version 2 or later" in flat
        for version in ("3", "2"):
            if f"version {version}" in flat:
                return f"GPL-{version}{'+' if later else ''}"
    return "see copyright file"


def licence_of(path: str, stanzas: list[tuple[list[str], str]]) -> str:
    """The licence of the last stanza (DEP-5's rule) one of whose globs matches the end
    of ``path`` (installed paths and source paths share their last components)."""
    parts = path.split("/")
    found = "unknown"
    for globs, name in stanzas:
        for glob in globs:
            tail = glob.split("/")
            if glob == "*" or fnmatch.fnmatch("/".join(parts[-len(tail):]), glob):
                found = name
    return found


def tracks_of(package: str, out: Path) -> list[tuple[Path, str]]:
    """(audio file, name inside the package) of every track; archives extracted under
    ``out/audio/PACKAGE/``."""
    found = []
    for path in installed_files(package):
        suffix = path.suffix.lower()
        if suffix in AUDIO or suffix in TRACKERS:
            found.append((path, path.as_posix()))
        elif suffix in ARCHIVES:
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    if Path(member).suffix.lower() not in AUDIO:
                        continue
                    target = out / "audio" / package / path.stem / member
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        partial = target.with_name(f".{target.name}.part")
                        with archive.open(member) as src, open(partial, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        partial.replace(target)
                    found.append((target, f"{path.parent.as_posix()}/{member}"))
    return found


def describe(path: Path, min_seconds: float) -> tuple[float, int, int] | str:
    """(duration, sample rate, channels) of a track soundfile decodes, or why not."""
    import soundfile

    if path.suffix.lower() in TRACKERS:
        return "a tracker module (notes and samples, not recorded audio soundfile decodes)"
    try:
        with soundfile.SoundFile(str(path)) as handle:
            rate, channels, frames = handle.samplerate, handle.channels, handle.frames
            handle.read(min(frames, rate), dtype="float32")  # it decodes, not only opens
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        return f"not decodable: {error}"
    if frames < min_seconds * rate:
        return f"{frames / rate:.1f} s, shorter than {min_seconds:g} s"
    return frames / rate, rate, channels


def build(out: Path, min_seconds: float = 20.0, seed: int = 0,
          doc_root: Path = Path("/usr/share/doc")) -> tuple[list[Track], list[str]]:
    """The corpus's tracks and the reasons tracks were skipped; writes the manifest.
    ``doc_root``: where each package's ``copyright`` file lies (``doc_root/PACKAGE``)."""
    out.mkdir(parents=True, exist_ok=True)
    tracks, skipped, seen = [], [], {}
    for package in PACKAGES:
        copyright_file = doc_root / package / "copyright"
        stanzas = licences(copyright_file)
        for path, name in tracks_of(package, out):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:  # one track installed twice (per language, say): kept once,
                skipped.append(f"{package}: {name}: the same file as {seen[digest]}")
                continue  # so that no copy lands in another split
            seen[digest] = name
            found = describe(path, min_seconds)
            if isinstance(found, str):
                skipped.append(f"{package}: {name}: {found}")
                continue
            source = f"debian:{package}{name}"
            duration, rate, channels = found
            tracks.append(Track(str(path.resolve()), round(duration, 3), rate, channels,
                                split_of(source, seed), source, package,
                                licence_of(name, stanzas), str(copyright_file)))
    lines = [json.dumps(asdict(t), sort_keys=True) for t in sorted(tracks, key=lambda t: t.path)]
    partial = out / ".manifest.jsonl.part"
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(out / "manifest.jsonl")
    return tracks, skipped


def merge(manifests: list[Path], out: Path) -> int:
    """One manifest of several, every path made absolute; returns the line count."""
    lines = []
    for manifest in manifests:
        for line in manifest.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                path = Path(entry["path"])
                entry["path"] = str(path if path.is_absolute() else
                                    (manifest.parent / path).resolve())
                lines.append(json.dumps(entry, sort_keys=True))
    out.write_text("\n".join(lines) + "\n")
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--min-seconds", type=float, default=20.0,
                        help="shorter tracks (jingles, effects) are skipped")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="other manifests (e.g. the rendered corpus's) to merge with "
                             "this one into OUT/mixed.jsonl")
    parser.add_argument("-v", "--verbose", action="store_true", help="list skipped tracks")
    args = parser.parse_args()
    missing = [p for p in PACKAGES if subprocess.run(
        ["dpkg", "-s", p], capture_output=True, check=False).returncode != 0]
    if missing:
        raise SystemExit(f"error: not installed: {' '.join(missing)} (apt-get install "
                         f"{' '.join(missing)})")
    tracks, skipped = build(args.out, args.min_seconds)
    if not tracks:
        raise SystemExit("error: no track could be decoded")
    for reason in skipped if args.verbose else skipped[:3]:
        print(f"skipped {reason}", file=sys.stderr)
    if len(skipped) > 3 and not args.verbose:
        print(f"... {len(skipped)} skipped in all (-v lists them)", file=sys.stderr)
    by_split = {s: sum(t.duration for t in tracks if t.split == s) / 3600
                for s in ("train", "valid", "test")}
    print(f"{len(tracks)} tracks, {sum(by_split.values()):.2f} h ("
          + ", ".join(f"{s} {h:.2f} h" for s, h in by_split.items())
          + f"), manifest {args.out / 'manifest.jsonl'}")
    if args.merge:
        count = merge([args.out / "manifest.jsonl", *args.merge], args.out / "mixed.jsonl")
        print(f"{count} files in {args.out / 'mixed.jsonl'}")


if __name__ == "__main__":
    main()
