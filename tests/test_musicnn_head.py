"""`cnn train --base musicnn`: a factor head on the analyzer's musicnn MSD tagger, its file, its embedder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analyzer.errors import InputError  # noqa: E402
from analyzer.stages.musicnn import load_tagger  # noqa: E402
from analyzer.stages.tagging import Tags  # noqa: E402
from cnn import musicnn_head as mh  # noqa: E402

SR = 22050


def _clip(seed: int, seconds: float = 3.5) -> np.ndarray:
    """A tone with a tremolo and some noise: something for the tagger to read (one or two patches)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.sin(2 * np.pi * rng.uniform(100, 2000) * t) * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 6) * t))
    return (0.25 * x + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, input=stdin)


def test_the_back_end_starts_as_the_taggers_own():
    """Before any training the fine-tuned back end gives the default embedding (float32 sums in another
    order: 1e-5)."""
    msd = load_tagger("msd")
    out = mh.tagger_output(_clip(0, seconds=30.0), SR, tagger=msd)  # one patch per 15 s: two
    model = mh.build(mh.HeadConfig(base="backend"), tagger=msd)
    x = mh.features(out, "backend")
    assert x.shape == (mh.POOLED_DIM, 2)
    with torch.no_grad():
        got = model.base_embedding(torch.from_numpy(x[None]))[0].numpy()
        # a crop padded with zero patches (cnn.train's crops of a short track) averages the real ones only
        padded = model.base_embedding(torch.from_numpy(np.pad(x, ((0, 0), (0, 3)))[None]))[0].numpy()
    want = Tags(mtt=None, msd=out).embedding()
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(padded, want, atol=1e-5)


def test_a_trained_head_round_trips_and_reads_the_taggers_output_instead_of_the_samples(tmp_path):
    """cnn.train trains both bases; the file loads back bit for bit; the embedder's two paths agree."""
    from cnn.embedder import load as load_embedder
    from cnn.train import TrainParams, train

    msd = load_tagger("msd")
    outs = [mh.tagger_output(_clip(i), SR, tagger=msd) for i in range(12)]
    factors = np.random.default_rng(1).standard_normal((12, 4)).astype(np.float32)
    for base in mh.BASES:
        torch.manual_seed(0)
        cfg = mh.HeadConfig(base=base, hidden=16, embedding_dim=8, n_factors=4)
        model = mh.build(cfg, tagger=msd)
        inputs = [mh.features(o, base) for o in outs]
        mh.standardize_from(model, inputs)
        model, hist = train(inputs, factors, model, TrainParams(crop_s=cfg.crop_s, batch=4, epochs=2, seed=0))
        assert len(hist.val_loss) == 2 and np.isfinite(hist.val_loss).all()
        path = tmp_path / f"{base}.safetensors"
        mh.save(model, path, training={"tracks": 12})
        again, manifest = mh.load(path)
        assert manifest["base"] == f"musicnn-msd:{base}" and manifest["config"]["base"] == base
        a, b = mh.predict(model, inputs[:2]), mh.predict(again, inputs[:2])
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])

        emb = load_embedder(path)
        from analyzer.embedding import TagsEmbedder, embed_analysis

        assert isinstance(emb, TagsEmbedder) and emb.model_id.startswith(f"{base}.safetensors ")
        x = _clip(3)
        from_samples = emb.embed(x, SR)
        # embed_analysis hands the analysis' tagger output over: the same vector, the tagger not run again
        def not_again(samples, sr):
            raise AssertionError("the tagger ran again")

        emb.embed = not_again
        from_tags = embed_analysis(emb, x, SR, Tags(mtt=None, msd=outs[3]))
        np.testing.assert_allclose(from_tags, from_samples, atol=1e-6)
        assert from_tags.shape == (8,) and abs(np.linalg.norm(from_tags) - 1) < 1e-5
        assert embed_analysis(emb, x[:SR], SR, Tags(mtt=None, msd=None)) is None  # under 3 s: no embedding


def _write_head(path, *, manifest_edit=None, tensor_edit=None):
    from safetensors.torch import save_file

    model = mh.build(mh.HeadConfig(hidden=8, embedding_dim=4, n_factors=3))
    manifest = {"format": mh.FORMAT, "base": "musicnn-msd:embedding",
                "config": {k: getattr(model.cfg, k) for k in mh.HeadConfig.__dataclass_fields__}}
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    if manifest_edit:
        manifest_edit(manifest)
    if tensor_edit:
        tensor_edit(tensors)
    save_file(tensors, str(path), metadata={"manifest": json.dumps(manifest)})
    return path


@pytest.mark.parametrize("edit, message", [
    (dict(manifest_edit=lambda m: m["config"].update(base="spectrogram")), "config base is 'spectrogram'"),
    (dict(manifest_edit=lambda m: m["config"].update(sr=22050)), "config sr is 22050"),
    (dict(manifest_edit=lambda m: m["config"].update(hidden=10**9)), "config hidden is 1000000000"),
    (dict(manifest_edit=lambda m: m["config"].pop("dropout")), "missing: ['dropout']"),
    (dict(tensor_edit=lambda t: t.update({"head.embed.weight": torch.zeros(5, 8)})), "head.embed.weight: [5, 8], expected [4, 8]"),
    (dict(tensor_edit=lambda t: t.pop("mu")), "mu: missing"),
    (dict(tensor_edit=lambda t: t["sd"].fill_(float("nan"))), "non-finite"),
])
def test_loading_refuses_a_malformed_head_in_one_line(tmp_path, edit, message):
    path = _write_head(tmp_path / "head.safetensors", **edit)
    with pytest.raises(InputError) as err:
        mh.load(path)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_analyze_refuses_a_malformed_head_in_one_line(tmp_path):
    import soundfile as sf

    wav = tmp_path / "tone.wav"
    sf.write(wav, _clip(0), SR)
    model = _write_head(tmp_path / "head.safetensors", manifest_edit=lambda m: m["config"].update(base="x"))
    r = _cli("analyzer.cli", wav, "--model", model)
    err = r.stderr.decode()
    assert r.returncode == 1 and "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert "not a musicnn head of this analyzer (config base is 'x'" in err


def test_cnn_train_base_musicnn_then_analyze_with_the_head(tmp_path):
    """recommend fit -> cnn train --base musicnn (2 epochs) -> analyze --model writes the head's embedding."""
    import soundfile as sf

    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for i in range(16):
        sf.write(audio_dir / f"t{i:02d}.wav", _clip(10 + i, seconds=3.0), SR)
    plays = ["user\titem\tplays"] + [f"u{u:02d}\tt{i:02d}\t{1 + (u * i) % 5}" for u in range(20) for i in range(16)
                                     if i % 2 == u % 2 and (u + i) % 3 != 0]
    (tmp_path / "plays.tsv").write_text("\n".join(plays) + "\n")
    model = tmp_path / "m"
    assert _cli("recommender.cli", "import-plays", tmp_path / "plays.tsv", "--model", model).returncode == 0
    assert _cli("recommender.cli", "fit", "--model", model, "--no-tune").returncode == 0
    bad = _cli("cnn.cli", "train", audio_dir, "--model", model, "--base", "mfcc")
    assert bad.returncode != 0 and b"--base must be one of logmel, musicnn" in bad.stderr and b"Traceback" not in bad.stderr
    head = tmp_path / "head.safetensors"
    r = _cli("cnn.cli", "train", audio_dir, "--model", model, "--base", "musicnn", "--epochs", "2", "--batch", "4",
             "--min-listeners", "1", "--out", head)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert head.is_file() and not head.with_name(head.name + ".ckpt").exists()
    loaded, manifest = mh.load(head)
    assert manifest["training"]["tracks"] == 16 and manifest["training"]["epochs_run"] == 2
    assert manifest["base"].startswith("musicnn-msd:")

    doc = _cli("analyzer.cli", audio_dir / "t00.wav", "--model", head)
    assert doc.returncode == 0, doc.stderr.decode()[-2000:]
    d = json.loads(doc.stdout)
    assert len(d["embedding"]) == loaded.cfg.embedding_dim == 128
    assert abs(np.linalg.norm(d["embedding"]) - 1) < 1e-3
    assert d["embedding_model"].startswith("head.safetensors ")
