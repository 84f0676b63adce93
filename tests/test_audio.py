import math

import pytest
import torch

from mmdtok.audio import load_audio, match_channels, read_audio, resample, write_audio


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_audio_files_round_trip_in_every_supported_format(tmp_path, suffix):
    t = torch.arange(22_050) / 22_050
    audio = torch.stack([0.5 * torch.sin(2 * math.pi * 440 * t),
                         0.3 * torch.sin(2 * math.pi * 660 * t)])
    write_audio(tmp_path / f"a{suffix}", audio, 22_050)
    back, rate = read_audio(tmp_path / f"a{suffix}")
    assert rate == 22_050 and back.shape[0] == 2
    lossy = suffix in {".ogg", ".mp3"}
    n = min(back.shape[-1], audio.shape[-1])
    if not lossy:
        torch.testing.assert_close(back[:, :n], audio[:, :n], atol=1e-4, rtol=0)
    else:  # lossy codecs keep the tone: correlation with the input near 1
        spectrum = torch.fft.rfft(back[0]).abs()
        assert abs(int(spectrum.argmax()) * 22_050 / back.shape[-1] - 440) < 5


def test_resampling_keeps_duration_and_pitch():
    t = torch.arange(44_100) / 44_100
    tone = torch.sin(2 * math.pi * 1000 * t)[None]
    out = resample(tone, 44_100, 32_000)
    assert out.shape == (1, 32_000)
    spectrum = torch.fft.rfft(out[0]).abs()
    assert int(spectrum.argmax()) == 1000  # 1 Hz bins over one second
    assert resample(tone, 44_100, 44_100) is tone


def test_channels_are_mixed_with_a_warning():
    stereo = torch.stack([torch.ones(10), -torch.ones(10) * 0.5])
    with pytest.warns(UserWarning, match="2 channel"):
        mono = match_channels(stereo, 1)
    torch.testing.assert_close(mono, torch.full((1, 10), 0.25))
    with pytest.warns(UserWarning, match="1 channel"):
        assert match_channels(mono, 2).shape == (2, 10)


def test_unreadable_and_empty_files_raise_value_errors(tmp_path):
    (tmp_path / "bad.wav").write_text("not audio")
    with pytest.raises(ValueError, match="cannot read audio"):
        load_audio(tmp_path / "bad.wav", 24_000, 1)
    write_audio(tmp_path / "empty.wav", torch.zeros(1, 0), 24_000)
    with pytest.raises(ValueError, match="no audio samples"):
        read_audio(tmp_path / "empty.wav")
