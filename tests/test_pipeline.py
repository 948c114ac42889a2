"""The main job end to end on a tiny setting: `velm-course train`, its run folder, resuming,
and what a new user's mistakes get back."""

import json
import os
import shutil
import signal

import pytest
import torch

import velm_course.cli as cli
import velm_course.pipeline as pipeline
from velm_course.engine.checkpoint import load_checkpoint
from velm_course.engine.config import RunConfig
from velm_course.eval.coco_eval import spice_unavailable

TINY = ["--steps", "6", "--n-train", "24", "--n-val", "4", "--n-test", "8", "--n-compositional", "6",
        "--batch-size", "8", "--checkpoint-every", "2", "--log-every", "1", "--val-every", "3"]
METRIC_KEYS = {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "content_accuracy", "scene_f1",
               "exact_scene", "count_accuracy", "relation_accuracy", "hallucination_rate"}
ROWS = {"model", "blind", "fixed_caption", "nearest_neighbour", "human", "oracle"}


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VELM_PROFILE", raising=False)
    return tmp_path


def the_run(runs):
    (run,) = list(runs.iterdir())
    return run


def test_train_writes_a_complete_run_folder(data_env, capsys):
    runs = data_env / "runs"
    assert cli.main(["train", "--runs-dir", str(runs), "--no-progress", *TINY]) == 0
    run = the_run(runs)
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "vocab.json", "checkpoint.pt", "best.pt", "baseline_checkpoint.pt", "metrics.json",
            "metrics.jsonl", "captions_test.json", "captions_compositional.json", "loss_curve.png",
            "samples.png"} <= names
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == {"test": 8, "compositional": 6}
    for split in ("test", "compositional"):
        assert set(metrics[split]) == ROWS
        for row in metrics[split].values():
            assert METRIC_KEYS <= set(row)
            # relation accuracy is None for a row that states no relation at all
            assert all(0 <= row[k] <= 1 for k in METRIC_KEYS - {"CIDEr"} if row[k] is not None)
            assert row["CIDEr"] >= 0 and (row["relation_accuracy"] is None) == (row["relation_n"] == 0)
            assert ("METEOR" in row) == (shutil.which("java") is not None)  # METEOR wherever Java runs it
        assert metrics[split]["oracle"]["exact_scene"] == 1.0
        assert metrics[split]["human"]["exact_scene"] == 1.0  # a reference names the scene exactly
    assert metrics["nll"]["image_worth"] == metrics["nll"]["blind"] - metrics["nll"]["model"]
    assert [c["step"] for c in metrics["nll"]["curve"]] == [3, 6]
    selection = metrics["selection"]
    decoding = selection["decoding"]["model"]
    assert set(decoding["val"]) == {"greedy", "beam3", "beam5"}
    best = max(decoding["val"].values(), key=lambda scores: scores["CIDEr"])
    assert decoding["val"]["greedy" if decoding["beam_width"] == 1 else f"beam{decoding['beam_width']}"] is best
    assert selection["checkpoint"]["model"]["step"] in (3, 6)
    fixed = selection["fixed_caption"]["caption"]
    assert {c["fixed_caption_caption"] for c in json.loads((run / "captions_test.json").read_text())} == {fixed}
    out = capsys.readouterr().out
    assert "test: 8 images, compositional: 6 images" in out and "exact_scene" in out
    assert "test/nearest_neighbour" in out and "compositional/human" in out
    config = RunConfig.load(run / "config.json")
    assert config.train.steps == 6 and config.data.n_train == 24
    assert json.loads((run / "vocab.json").read_text())["words"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    state = load_checkpoint(run / "checkpoint.pt")  # loads with weights_only=True
    assert state["step"] == 6 and state["vocab"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert state["config"] == config.to_dict()
    captions = json.loads((run / "captions_test.json").read_text())
    assert len(captions) == 8 and all(isinstance(c["caption"], str) for c in captions)
    assert f"run folder: {run}" in out
    assert (run / "samples.png").read_bytes()[:4] == b"\x89PNG"


def stop_at(monkeypatch, step_calls: int):
    """Send this process a SIGTERM (as Colab or a scheduler does) during the k-th training step."""
    real, calls = pipeline.captioner_loss, {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        if calls["n"] == step_calls:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(model, batch)

    monkeypatch.setattr(pipeline, "captioner_loss", loss)


def test_sigterm_then_resume_finishes_the_same_run(data_env, monkeypatch, capsys):
    runs = data_env / "runs"
    stop_at(monkeypatch, 3)
    assert cli.main(["train", "--runs-dir", str(runs), "--no-progress", *TINY]) == 130
    run = the_run(runs)
    assert "--resume" in capsys.readouterr().err
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 3  # saved at the step it stopped
    assert not (run / "metrics.json").exists()
    monkeypatch.undo()
    monkeypatch.setenv("VELM_DATA_DIR", str(data_env / "data"))
    assert cli.main(["train", "--run-dir", str(run), "--resume", "--no-progress"]) == 0
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 6 and [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5, 6]
    assert (run / "metrics.json").exists()

    # an uninterrupted run in another folder ends with the same weights
    assert cli.main(["train", "--run-dir", str(data_env / "straight"), "--no-progress", *TINY]) == 0
    straight = load_checkpoint(data_env / "straight" / "checkpoint.pt")["model"]
    assert all(torch.equal(straight[k], state["model"][k]) for k in straight)

    # more steps later: accepted, continues from step 6
    assert cli.main(["train", "--resume", str(run), "--steps", "8", "--no-progress"]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 8
    # another model: refused, naming the fields
    assert cli.main(["train", "--resume", str(run), "--d-model", "64", "--no-progress"]) == 2
    assert "model.d_model: 128 -> 64" in capsys.readouterr().err


def test_a_finished_run_is_not_overwritten(data_env, capsys):
    run = data_env / "run"
    assert cli.main(["train", "--run-dir", str(run), "--no-progress", *TINY]) == 0
    before = (run / "checkpoint.pt").read_bytes()
    assert cli.main(["train", "--run-dir", str(run), "--no-progress", *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("content, message", [
    ("", "config.json: not valid JSON"),
    ("{}", "config.json: missing field 'data'"),
    ('{"data": {}, "model": {}, "train": {}, "eval": {}, "profile": "ci", "version": 2}',
     "config.json: missing field 'data.dataset'"),
    # a run folder of an older package: its version is named before any field it lacks
    ('{"data": {}, "model": {}, "train": {}, "eval": {}, "profile": "ci", "version": 1}',
     "config.json: config version 1 is not this package's 2; start a new run"),
])
def test_resume_with_a_bad_config_names_file_and_field(data_env, capsys, content, message):
    run = data_env / "run"
    run.mkdir()
    (run / "config.json").write_text(content)
    assert cli.main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_resume_with_a_corrupt_checkpoint_names_it(data_env, capsys):
    run = data_env / "run"
    assert cli.main(["train", "--run-dir", str(run), "--no-progress", *TINY]) == 0
    (run / "checkpoint.pt").write_bytes(b"\x00" * 100)
    assert cli.main(["train", "--resume", str(run), "--steps", "8", "--no-progress"]) == 2
    assert "checkpoint.pt: not a readable checkpoint" in capsys.readouterr().err


def test_missing_run_folder_and_unknown_profile(data_env, monkeypatch, capsys):
    assert cli.main(["train", "--resume", str(data_env / "nowhere"), "--no-progress"]) == 2
    assert "config.json: no such file" in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--no-progress"]) == 2
    assert "--resume needs the run folder" in capsys.readouterr().err
    monkeypatch.setenv("VELM_PROFILE", "huge")
    assert cli.main(["train", "--no-progress"]) == 2
    assert "unknown profile 'huge'" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--steps", "-5"], ["argument --steps/--max-steps: must be >= 1, got -5"]),
    (["--max-steps", "0"], ["must be >= 1, got 0"]),
    (["--batch-size", "0"], ["argument --batch-size: must be >= 1, got 0"]),
    (["--image-size", "-64"], ["argument --image-size: must be >= 1"]),
    (["--steps", "many"], ["expected a whole number, got 'many'"]),
    (["--dataset", "imagenet"], ["invalid choice: 'imagenet'", "shapes", "coco"]),
    (["--encoder", "vgg16"], ["invalid choice: 'vgg16'", "small_cnn", "course_vit", "resnet50", "vit_b_16"]),
    (["--precision", "fp8"], ["invalid choice: 'fp8'", "auto", "fp32", "bf16", "fp16"]),
    (["--profile", "huge"], ["invalid choice: 'huge'", "ci", "full"]),
    (["--dropout", "-0.1"], ["argument --dropout: must be >= 0"]),
])
def test_cli_refuses_bad_settings_listing_what_is_accepted(data_env, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *args])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]  # argparse's one-line error
    assert all(part in error for part in message), error


def test_cli_options_map_onto_the_run_config():
    args = cli.build_parser().parse_args(
        ["train", "--dataset", "coco", "--profile", "full", "--device", "cpu", "--max-steps", "9",
         "--checkpoint-every", "3", "--run-dir", "r", "--encoder", "resnet18", "--pretrained", "--freeze-encoder",
         "--precision", "fp32", "--compile", "--batch-size", "4", "--dropout", "0.2", "--eval-batch-size", "7"])
    config, run_dir = cli.config_from_args(args)
    assert str(run_dir) == "r" and config.profile == "full"
    assert (config.data.dataset, config.train.device, config.train.steps, config.train.checkpoint_every) == (
        "coco", "cpu", 9, 3)
    assert (config.model.encoder, config.model.pretrained, config.model.freeze_encoder) == ("resnet18", True, True)
    assert (config.train.precision, config.train.compile, config.train.batch_size) == ("fp32", True, 4)
    # the rest from the full profile's COCO preset (the recipe): 224-pixel images, not the shapes' 128
    assert (config.model.dropout, config.eval.batch_size, config.data.image_size) == (0.2, 7, 224)


def test_missing_coco_names_the_fetch_command(data_env, capsys):
    args = ["train", "--dataset", "coco", "--root", str(data_env / "coco"), "--run-dir", str(data_env / "run"),
            "--no-progress"]
    assert cli.main(args) == 2
    assert f"velm-course fetch coco --dest {data_env / 'coco'}" in capsys.readouterr().err
    assert not (data_env / "run").exists()  # nothing half-made to trip over on the next try


def test_fetch_command_calls_the_downloader(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("velm_course.data.coco.fetch_coco", lambda dest: calls.append(dest))
    assert cli.main(["fetch", "coco", "--dest", str(tmp_path)]) == 0
    assert calls == [str(tmp_path)]


def test_evaluate_and_caption_commands(data_env, capsys):
    run = data_env / "run"
    assert cli.main(["train", "--run-dir", str(run), "--no-progress", *TINY]) == 0
    capsys.readouterr()
    if spice_unavailable() is None:
        assert cli.main(["evaluate", str(run), "--beam-width", "2"]) == 0
    else:  # every metric is asked for; the one that cannot run here says what it needs
        with pytest.warns(RuntimeWarning, match="SPICE left out: SPICE needs"):
            assert cli.main(["evaluate", str(run), "--beam-width", "2"]) == 0
    out = capsys.readouterr().out
    assert "test split, 8 images, beam width 2" in out and "CIDEr" in out
    results = json.loads((run / "results_test.json").read_text())  # COCO results format
    assert len(results) == 8 and all(set(r) == {"image_id", "caption"} for r in results)
    report = json.loads((run / "eval_test.json").read_text())
    assert report["beam_width"] == 2 and METRIC_KEYS <= set(report["scores"])

    # captions for image files; an unreadable one is skipped, named and counted
    good = next((data_env / "data" / "generated").glob("shapes-*/images/test/*.png"))
    bad = data_env / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert cli.main(["caption", "--run-dir", str(run), str(good), str(bad)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}\t") and len(captured.out.splitlines()) == 1
    assert f"skipped {bad}" in captured.err and "1 of 2 images could not be read" in captured.err
    assert cli.main(["caption", "--run-dir", str(run), str(bad)]) == 2

    # a folder without a trained model says how to make one
    assert cli.main(["evaluate", str(data_env / "empty")]) == 2
    assert "velm-course train" in capsys.readouterr().err


def test_split_features_streamed_equal_the_in_memory_ones():
    """A split too big to decode at once (COCO's train) gets the same nearest-neighbour features."""
    from velm_course.multimodal.captioner import Captioner, CaptionerConfig

    torch.manual_seed(0)
    images = torch.randint(0, 256, (7, 3, 64, 64), dtype=torch.uint8)

    class Images:  # the part of CocoCaptions the function reads
        def __len__(self):
            return len(images)

        def get_uint8(self, i):
            return images[i], ["a caption"]

    model = Captioner(CaptionerConfig(vocab_size=12, d_model=16, n_layer=1, n_head=2)).eval()
    whole = pipeline._split_features(model, Images(), images, batch_size=3)
    streamed = pipeline._split_features(model, Images(), None, batch_size=3)  # batches of 3, 3, 1
    assert streamed.shape == (7, 16) and torch.allclose(streamed, whole, atol=1e-6)
    assert not torch.allclose(whole[0], whole[1])  # distinct images, distinct features


def test_a_feature_cache_run_trains_on_cached_features_and_captions_new_images(data_env, capsys, monkeypatch):
    """``--freeze-encoder --feature-cache`` on COCO-shaped data: the frozen encoder runs once over
    every image into the cache, a second run reuses it, and the trained captioner, reloaded with
    the encoder itself, reads pixels exactly as it read the cache during training."""
    import velm_course.vision.feature_cache as fc
    from velm_course.data.coco import coco_split, pack_shapes_as_coco
    from velm_course.data.shapes import ShapesConfig, ensure_shapes

    shapes = ensure_shapes(ShapesConfig(image_size=64, n_train=24, n_val=4, n_test=8, seed=0),
                           data_root=data_env / "data", progress=False)
    coco = pack_shapes_as_coco(shapes, data_env / "coco")
    args = ["--dataset", "coco", "--root", str(coco), "--encoder", "resnet18", "--freeze-encoder",
            "--feature-cache", "--no-progress", *TINY[:2], *TINY[8:]]
    encoded = []
    real_build = fc.build_feature_cache

    def counting_build(encoder, dataset, folder, **kw):
        def count(module, inputs, output):
            encoded.append(len(inputs[0]))
        handle = encoder.register_forward_hook(count)
        try:
            return real_build(encoder, dataset, folder, **kw)
        finally:
            handle.remove()

    monkeypatch.setattr(fc, "build_feature_cache", counting_build)
    assert cli.main(["train", "--run-dir", str(data_env / "a"), *args]) == 0
    assert sum(encoded) == 24 + 4 + 8  # every image once: train, val, test
    metrics = json.loads((data_env / "a" / "metrics.json").read_text())
    folder = metrics["feature_cache"]
    assert folder.startswith(str(data_env / "data" / "features" / "coco-resnet18-random-64px-"))
    assert (data_env / "a" / "encoder.pt").is_file()

    encoded.clear()
    assert cli.main(["train", "--run-dir", str(data_env / "b"), *args, "--lr", "1e-3"]) == 0
    assert encoded == []  # the same frozen encoder and images: the cache is read, not rebuilt
    assert json.loads((data_env / "b" / "metrics.json").read_text())["feature_cache"] == folder
    encoded.clear()
    # another seed draws another random encoder: another cache, never the first one's features
    assert cli.main(["train", "--run-dir", str(data_env / "c"), *args, "--seed", "1", "--steps", "1"]) == 0
    assert sum(encoded) == 36 and json.loads((data_env / "c" / "metrics.json").read_text())["feature_cache"] != folder

    # the captioner, reloaded with its frozen encoder, gives from pixels what it gave from the cache
    model, vocab, config = pipeline.load_captioner(data_env / "a")
    assert config.model.feature_cache and not any(p.requires_grad for p in model.encoder.encoder.parameters())
    test = coco_split(coco, "test")
    images = torch.stack([test.get_uint8(i)[0] for i in range(len(test))])
    cache = fc.FeatureCache.open(folder)
    rows = torch.tensor([cache.image_ids.index(i) for i in test.image_ids])
    cached = pipeline.Captioner(model.config, encoder=pipeline._encoder_for(config, fc.MappedFeatures(cache)))
    cached.load_state_dict(model.state_dict(), strict=False)
    idx = torch.randint(4, len(vocab), (len(test), 5))
    with torch.no_grad():
        from_pixels, _ = model(images.float() / 255, idx)
        from_cache, _ = cached.eval()(rows, idx)
    assert torch.allclose(from_pixels, from_cache, atol=0.05, rtol=0.01)  # float16 features
    assert (from_pixels - from_cache).abs().max() > 0  # really two paths (cache rounded to float16)
    # the encoder comes from the run's encoder.pt (not rebuilt from the seed): change it, and it shows
    saved = torch.load(data_env / "a" / "encoder.pt", weights_only=True)
    torch.save({k: v * 1.5 if v.is_floating_point() else v for k, v in saved.items()}, data_env / "a" / "encoder.pt")
    changed, _, _ = pipeline.load_captioner(data_env / "a")
    with torch.no_grad():
        assert not torch.allclose(changed(images.float() / 255, idx)[0], from_cache, atol=0.05, rtol=0.01)
    torch.save(saved, data_env / "a" / "encoder.pt")
    capsys.readouterr()
    good = next((coco / "val2014").glob("*.png"))
    assert cli.main(["caption", "--run-dir", str(data_env / "a"), str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"{good}\t")


def test_feature_cache_needs_a_frozen_encoder(capsys):
    assert cli.main(["train", "--feature-cache", "--no-progress"]) == 2
    assert "model.feature_cache needs model.freeze_encoder" in capsys.readouterr().err
