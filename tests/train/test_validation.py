"""Held-out quality of a codec: the figures match their definitions."""

import math

import pytest
import torch

from mmdtok import Codec
from mmdtok.losses.spectral import mel_distance, si_sdr
from mmdtok.metrics import entropy
from mmdtok.testing import trained_codebooks
from mmdtok.train.validation import evaluate_bitrates, evaluate_codec, load_clips


def test_quality_is_the_mean_of_per_clip_figures(tiny_corpus):
    folder, pieces = tiny_corpus
    codec = Codec.from_preset("small-music").eval()
    clips = load_clips([folder / p.path for p in pieces[:3]], codec.sample_rate, 1, 0.5)
    assert [c.shape for c in clips] == [torch.Size([1, 12_000])] * 3
    quality, first = evaluate_codec(codec, clips)
    scores, mels, codes = [], [], []
    with torch.inference_mode():
        for clip in clips:
            frames = codec.encode(clip[None])
            decoded = codec.decode(frames, length=clip.shape[-1])
            scores.append(float(si_sdr(decoded, clip[None])[0]))
            mels.append(float(mel_distance(decoded, clip[None], codec.sample_rate)))
            codes.append(frames[0])
    assert quality.si_sdr == pytest.approx(sum(scores) / 3, abs=1e-4)
    assert quality.mel_distance == pytest.approx(sum(mels) / 3, rel=1e-5)
    joined = torch.cat(codes, dim=-1)
    assert quality.perplexities[0] == pytest.approx(math.exp(float(entropy(joined[0], 1024))))
    assert quality.utilization[1] == len(torch.unique(joined[1])) / 1024
    assert quality.clips == 3 and quality.seconds == pytest.approx(1.5)
    assert first.shape == (1, 12_000)
    assert set(quality.as_dict()) >= {"si_sdr", "mel_distance", "perplexity_3", "utilization_0"}


def test_no_clips_is_an_error():
    with pytest.raises(ValueError, match="no clips"):
        evaluate_codec(Codec.from_preset("small-music"), [])


def test_several_bitrates_in_one_pass_give_each_bitrates_figures(tiny_corpus):
    folder, pieces = tiny_corpus
    codec = trained_codebooks("small-music").eval()
    clips = load_clips([folder / p.path for p in pieces[:2]], codec.sample_rate, 1, 0.5)
    together, _ = evaluate_bitrates(codec, clips, [1, 3, 4])
    for k in (1, 3, 4):
        alone, _ = evaluate_codec(codec, clips, k)
        assert together[k].si_sdr == pytest.approx(alone.si_sdr, abs=1e-6)
        assert together[k].mel_distance == pytest.approx(alone.mel_distance, rel=1e-6)
        assert together[k].perplexities == pytest.approx(alone.perplexities)
        assert len(together[k].perplexities) == k
    assert together[4].mel_distance < together[1].mel_distance
    with pytest.raises(ValueError, match=r"n_q must be in 1\.\.4"):
        evaluate_bitrates(codec, clips, [0, 2])


def test_recalibration_sets_the_statistics_of_the_codecs_own_encoder(tiny_corpus):
    from mmdtok.train.validation import recalibrate_latent_norm

    folder, pieces = tiny_corpus
    clips = load_clips([folder / p.path for p in pieces], 24_000, 1, 0.5)
    codec = Codec.from_preset("small-music").eval()
    norm = codec.quantizer.latent_norm
    norm.mean.fill_(123.0)
    batches = [torch.stack(clips[:3]), torch.stack(clips[3:])]
    assert recalibrate_latent_norm(codec, iter(batches))
    with torch.inference_mode():
        rows = torch.cat([codec.encoder(b).transpose(1, 2).reshape(-1, 64) for b in batches])
    torch.testing.assert_close(norm.mean, rows.mean(dim=0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(norm.var, rows.var(dim=0, unbiased=False), rtol=1e-3,
                               atol=1e-9)
    assert not recalibrate_latent_norm(Codec.from_preset("musicgen-32khz"), iter(batches))
    # A batch holding a NaN file is skipped: the statistics are those of the others.
    poisoned = batches[0].clone()
    poisoned[1, 0, 100] = float("nan")
    before = norm.mean.clone(), norm.var.clone()
    norm.mean.fill_(5.0)
    assert recalibrate_latent_norm(codec, iter([poisoned, *batches]))
    torch.testing.assert_close(norm.mean, before[0])
    torch.testing.assert_close(norm.var, before[1])
    with pytest.raises(ValueError, match="no batches with finite values"):
        recalibrate_latent_norm(codec, iter([poisoned]))


def test_a_codec_with_non_finite_weights_or_buffers_is_not_saved(tmp_path):
    codec = Codec.from_preset("small-music")
    codec.quantizer.latent_norm.var.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite values in quantizer.latent_norm.var"):
        codec.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
