"""How well a codec reconstructs real audio, next to classical codecs at stated bitrates:
what ``mmdtok evaluate`` prints.

Every system is scored against the same reference: the file at the codec's sample rate
and channel count. Metrics per file: SI-SDR (dB, higher is better), the normalized
multi-scale mel distance of the trainer (lower is better), a multi-resolution log-STFT
distance (lower is better) and, with the optional ``evaluate`` extra, ViSQOL v3 in audio
mode (MOS-LQO 1..5, higher is better; both signals resampled to 48 kHz as it requires).
Classical baselines run through the system's programs (``opusenc``/``opusdec`` for Opus,
``ffmpeg`` for mp3), else through the same libraries bundled in PyAV; with neither, their
rows are skipped with a note, never imitated.
Their output is aligned to the reference first (cross-correlation within 100 ms) so that a
codec's delay is not scored as distortion.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmdtok.audio import is_audio_file, load_audio, resample
from mmdtok.losses.spectral import STFT_SIZES, log_stft_distance, mel_distance, si_sdr
from mmdtok.models import CodecModel, decode_many, encode_many
from mmdtok.paths import find_inputs

METRICS = ("si_sdr", "mel_distance", "stft_distance", "visqol")
BASELINE_KINDS = ("opus", "mp3")


def stft_distance(estimate: Tensor, target: Tensor, floor: float = 1e-5) -> float:
    """Mean over FFT sizes 2048, 1024, 512 and 256 (hop a quarter, Hann) of the mean
    absolute difference of log10 magnitudes (floored at ``floor``): audio [C, L]."""
    return float(log_stft_distance(estimate[None].double(), target[None].double(),
                                   STFT_SIZES, floor))


@cache
def _visqol():
    """A ViSQOL v3 audio-mode instance, or None when the package is not installed."""
    try:
        from visqol.api import VisqolApi
    except ImportError:
        return None
    api = VisqolApi()
    api.create(mode="audio")
    return api


def visqol_available() -> bool:
    return _visqol() is not None


def visqol(estimate: Tensor, target: Tensor, sample_rate: int) -> float | None:
    """ViSQOL v3 audio mode (MOS-LQO) of mono mixes of audio [C, L] at 48 kHz; None
    without the ``evaluate`` extra (``pip install mmdtok[evaluate]``)."""
    api = _visqol()
    if api is None:
        return None
    ref = resample(target.double().mean(dim=0, keepdim=True), sample_rate, 48_000)[0]
    deg = resample(estimate.double().mean(dim=0, keepdim=True), sample_rate, 48_000)[0]
    return float(api.measure_from_arrays(ref.numpy(), deg.numpy(), 48_000).moslqo)


def scores(estimate: Tensor, target: Tensor, sample_rate: int,
           with_visqol: bool = True) -> dict[str, float | None]:
    """Every metric of one reconstruction [C, L] against its reference [C, L]."""
    if estimate.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(estimate.shape)} vs {tuple(target.shape)}")
    return {"si_sdr": float(si_sdr(estimate[None].double(), target[None].double())[0]),
            "mel_distance": float(mel_distance(estimate[None].float(), target[None].float(),
                                               sample_rate)),
            "stft_distance": stft_distance(estimate, target),
            "visqol": visqol(estimate, target, sample_rate) if with_visqol else None}


def align(estimate: Tensor, target: Tensor, max_lag: int) -> tuple[Tensor, int]:
    """``estimate`` shifted by the lag (|lag| <= ``max_lag`` samples) that maximizes its
    cross-correlation with ``target`` (mono mixes), cut or zero-padded to the target's
    length; and that lag (positive: the estimate came late)."""
    x, y = estimate.double().mean(dim=0), target.double().mean(dim=0)
    size = 1 << math.ceil(math.log2(x.numel() + y.numel()))
    corr = torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(y, size).conj(), size)
    lags = torch.cat([torch.arange(0, max_lag + 1), torch.arange(-max_lag, 0)])
    lag = int(lags[int(corr[lags % size].argmax())])
    shifted = estimate[:, lag:] if lag >= 0 else torch.nn.functional.pad(estimate, (-lag, 0))
    length = target.shape[-1]
    shifted = shifted[:, :length]
    return torch.nn.functional.pad(shifted, (0, length - shifted.shape[-1])), lag


@dataclass(frozen=True)
class Baseline:
    """A classical codec at a bitrate: ``kind`` "opus" (hard CBR) or "mp3" (CBR), ``kbps``.

    It runs through the system's programs (``opusenc``/``opusdec``, ``ffmpeg``) when they
    are installed, else through the same libraries (libopus, LAME) bundled in PyAV (``pip
    install av``, in the ``evaluate`` extra), and the row says which: the two do not give
    identical figures (other library versions and defaults).
    """

    kind: str
    kbps: float

    @property
    def programs(self) -> tuple[str, ...]:
        return ("opusenc", "opusdec") if self.kind == "opus" else ("ffmpeg",)

    def engine(self) -> str | None:
        """"programs", "pyav", or None when neither is installed."""
        if all(shutil.which(p) for p in self.programs):
            return "programs"
        try:
            import av  # noqa: F401
        except ImportError:
            return None
        return "pyav"

    @property
    def name(self) -> str:
        return f"{self.kind} {self.kbps:g} kbps"

    def label(self) -> str:
        """The row's name, saying what ran it."""
        via = {"programs": " + ".join(self.programs), "pyav": "PyAV"}.get(self.engine(), "")
        return f"{self.name} ({via})"

    def roundtrip(self, audio: Tensor, sample_rate: int, timeout: float = 600) -> Tensor:
        """Audio [C, L] encoded and decoded, back at ``sample_rate``, aligned to the input;
        RuntimeError naming the program when it fails or none is installed."""
        engine = self.engine()
        if engine is None:
            raise RuntimeError(f"{self.name}: neither {' nor '.join(self.programs)} nor PyAV "
                               "is installed")
        run = self._programs if engine == "programs" else self._pyav
        out, rate = run(audio, sample_rate, timeout)
        out = resample(out, rate, sample_rate)
        if out.shape[0] != audio.shape[0]:
            out = out.mean(dim=0, keepdim=True).expand(audio.shape[0], -1)
        return align(out, audio, max_lag=sample_rate // 10)[0]

    def _programs(self, audio: Tensor, sample_rate: int, timeout: float
                  ) -> tuple[Tensor, int]:
        import soundfile

        with tempfile.TemporaryDirectory() as tmp:
            source, coded, decoded = (Path(tmp) / n for n in ("in.wav", "coded", "out.wav"))
            soundfile.write(source, audio.T.numpy(), sample_rate, subtype="FLOAT")
            if self.kind == "opus":
                commands = [["opusenc", "--quiet", "--hard-cbr", "--bitrate", f"{self.kbps:g}",
                             str(source), str(coded)],
                            ["opusdec", "--quiet", "--rate", str(sample_rate), "--float",
                             str(coded), str(decoded)]]
            else:
                commands = [["ffmpeg", "-v", "error", "-y", "-i", str(source), "-b:a",
                             f"{self.kbps:g}k", "-f", "mp3", str(coded)],
                            ["ffmpeg", "-v", "error", "-y", "-i", str(coded), "-ar",
                             str(sample_rate), str(decoded)]]
            for command in commands:
                result = subprocess.run(command, capture_output=True, text=True,
                                        timeout=timeout, check=False)
                if result.returncode != 0:
                    raise RuntimeError(f"{command[0]} failed ({result.returncode}): "
                                       f"{result.stderr.strip()[:300]}")
            data, rate = soundfile.read(decoded, dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(data.T)), rate

    def _pyav(self, audio: Tensor, sample_rate: int, timeout: float) -> tuple[Tensor, int]:
        import io

        import av

        layout = "mono" if audio.shape[0] == 1 else "stereo"
        opus = self.kind == "opus"
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="ogg" if opus else "mp3") as container:
            stream = container.add_stream("libopus" if opus else "libmp3lame",
                                          rate=48_000 if opus else sample_rate, layout=layout)
            stream.bit_rate = round(self.kbps * 1000)
            stream.options = {"vbr": "off"} if opus else {}
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio.float().numpy()), format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
        buffer.seek(0)
        chunks, rate = [], sample_rate
        with av.open(buffer) as container:
            for frame in container.decode(audio=0):
                data = frame.to_ndarray()
                chunks.append(data if frame.format.is_planar else
                              data.reshape(frame.samples, -1).T)
                rate = frame.sample_rate
        if not chunks:
            raise RuntimeError(f"{self.name}: PyAV decoded no audio")
        return torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32)), rate


def parse_baselines(text: str) -> list[Baseline]:
    """``"opus:6,12 mp3:64"`` (or ``;`` between kinds) into baselines; ValueError for
    anything else."""
    found = []
    for part in text.replace(";", " ").split():
        kind, sep, rates = part.partition(":")
        if kind not in BASELINE_KINDS or not sep or not rates:
            raise ValueError(f"baseline {part!r} is not KIND:KBPS[,KBPS...] with KIND one of "
                             f"{', '.join(BASELINE_KINDS)} (e.g. opus:6,12)")
        for rate in rates.split(","):
            try:
                kbps = float(rate)
            except ValueError:
                raise ValueError(f"baseline {part!r}: {rate!r} is not a bitrate in kbps"
                                 ) from None
            if not 0.5 <= kbps <= 512:
                raise ValueError(f"baseline {part!r}: {kbps:g} kbps is out of 0.5..512")
            found.append(Baseline(kind, kbps))
    return found


@dataclass
class SystemScores:
    """One system (the codec at a number of codebooks, or a baseline) over the files."""

    system: str
    kbps: float
    files: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})

    def add(self, path: str, values: dict[str, float | None]) -> None:
        self.files.append(path)
        for metric, value in values.items():
            if value is not None:
                self.values[metric].append(value)

    def summary(self) -> dict[str, dict[str, float] | None]:
        """Per metric: mean, standard deviation over files (0 for one file) and count;
        None for a metric that was not measured."""
        out: dict[str, dict[str, float] | None] = {}
        for metric, values in self.values.items():
            out[metric] = None if not values else {
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "files": len(values)}
        return out


@dataclass
class Evaluation:
    """Rows per system, the files that failed (with reasons) and notes (baselines or
    metrics that could not run, and why)."""

    rows: list[SystemScores]
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"rows": [{"system": r.system, "kbps": r.kbps, "files": r.files,
                          "per_file": r.values, "summary": r.summary()} for r in self.rows],
                "failed": [list(f) for f in self.failed], "notes": self.notes}


def reference_files(paths: Sequence[str | os.PathLike[str]], split: str | None = None
                    ) -> list[Path]:
    """The audio files of ``paths``: files, folders (searched recursively) and manifests
    (.jsonl, as the recipes of ``examples/datasets`` write), whose entries are kept only
    when their ``split`` is ``split`` (all of them when None). ValueError for a missing
    path or a malformed manifest."""
    found = find_inputs(paths, is_audio_file, split, "audio file (wav, flac, ogg, mp3)")
    return [f.path for f in found]


def codec_kbps(codec: CodecModel, n_q: int) -> float:
    """The bitrate of ``n_q`` codebooks; of the float16 latent for a continuous codec."""
    if codec.continuous:
        return codec.latent_dim * 16 * codec.frame_rate / 1000
    return n_q * math.log2(codec.codebook_size) * codec.frame_rate / 1000


def stored(codec: CodecModel, codes: Tensor, n_q: int) -> Tensor:
    """What a token file of ``n_q`` codebooks holds of ``codes`` [K, T]: their prefix;
    for a continuous codec the latent [D, T] rounded to float16 (as a latent file keeps
    it by default)."""
    return codes.half().float() if codec.continuous else codes[:n_q]


def evaluate(codec: CodecModel, paths: Sequence[str | os.PathLike[str]], *,
             n_q: Sequence[int] | None = None, baselines: Sequence[Baseline] = (),
             with_visqol: bool = True, name: str | None = None,
             seconds: float | None = None, split: str | None = None,
             progress: Callable[[str], None] = lambda path: None) -> Evaluation:
    """Encode and decode every audio file under ``paths`` with the first ``n_q``
    codebooks (each value; default every prefix 1..K), run each available baseline on
    the same reference, and score them all. A file that cannot be read or coded fails
    alone. ``seconds``: score only that long an excerpt from the middle of each file
    (coded alone, as a file of that length). ``split``: of the entries of manifests among
    ``paths`` (:func:`reference_files`). ``progress`` is called once per file."""
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    files = reference_files(paths, split)
    if not files:
        raise ValueError(f"no audio files in {', '.join(map(str, paths))}"
                         + (f" (split {split!r})" if split is not None else ""))
    prefixes = sorted({codec.quantizer.resolve_n_q(k)
                       for k in (n_q or codec.quantizer.prefixes())})
    label = name or codec.config.name
    rows = {k: SystemScores(f"{label}, {k} codebook{'s' * (k > 1)}" if not codec.continuous
                            else f"{label}, float16 latent", codec_kbps(codec, k))
            for k in prefixes}
    report = Evaluation(list(rows.values()))
    usable = []  # (its row, baseline)
    for baseline in baselines:
        if baseline.engine() is None:
            report.notes.append(f"{baseline.name}: skipped, neither "
                                f"{' and '.join(baseline.programs)} nor PyAV is installed "
                                "(apt-get install opus-tools / ffmpeg, or pip install av)")
        else:
            usable.append((SystemScores(baseline.label(), baseline.kbps), baseline))
            report.rows.append(usable[-1][0])
    if with_visqol and not visqol_available():
        report.notes.append("ViSQOL: not measured (pip install mmdtok[evaluate])")
        with_visqol = False
    device = next(codec.parameters()).device
    for path in files:
        try:
            reference, _ = load_audio(path, codec.sample_rate, codec.channels)
            if seconds is not None and reference.shape[-1] > seconds * codec.sample_rate:
                keep = round(seconds * codec.sample_rate)
                start = (reference.shape[-1] - keep) // 2
                reference = reference[:, start : start + keep].contiguous()
            with torch.inference_mode():
                codes = encode_many(codec, [reference.to(device)])[0]
                decoded = {k: decode_many(codec, [stored(codec, codes, k)],
                                          [reference.shape[-1]])[0].cpu() for k in prefixes}
            coded = [(rows[k], decoded[k]) for k in prefixes] + [
                (row, baseline.roundtrip(reference, codec.sample_rate))
                for row, baseline in usable]
            measured = [(row, scores(audio.float(), reference, codec.sample_rate, with_visqol))
                        for row, audio in coded]
        except (ValueError, RuntimeError, OSError, subprocess.SubprocessError) as error:
            report.failed.append((str(path), str(error)))
        else:
            for row, values in measured:
                row.add(str(path), values)
        progress(str(path))
    return report


__all__ = ["Baseline", "Evaluation", "SystemScores", "align", "codec_kbps", "evaluate",
           "parse_baselines", "reference_files", "scores", "stft_distance", "visqol",
           "visqol_available"]
