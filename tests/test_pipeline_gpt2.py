"""The main job with Hugging Face's GPT-2 as the decoder (``--decoder gpt2``): offline it falls
back to a small random GPT-2 over the caption words, with a warning; from a local pretrained
folder it starts from those weights (the captioner and the blind baseline alike) and reads GPT-2's
BPE tokens, also through the COCO path (HF datasets tokens, the feature cache); the run folder
reloads, resumes and captions images without the hub; and COCO in the full profile brings the
recipe's settings."""

import json

import pytest
import torch

import velm_course.cli as cli
import velm_course.pipeline as pipeline
from velm_course.data.coco import coco_split, pack_shapes_as_coco
from velm_course.data.registry import open_caption_data
from velm_course.data.shapes import ShapesConfig, ensure_shapes
from velm_course.eval.captioning import caption_images
from velm_course.multimodal.hf_gpt2 import (
    GPT2Captioner,
    GPT2CaptionerConfig,
    GPT2CaptionTokenizer,
    small_gpt2,
)

pytest.importorskip("transformers")
from test_hf_gpt2 import tiny_bpe  # noqa: E402  (the GPT-2 tests' tiny byte-level BPE)

TINY = ["--steps", "6", "--batch-size", "8", "--checkpoint-every", "2", "--log-every", "1", "--val-every", "3",
        "--no-progress", "--decoder", "gpt2"]
SHAPES = ["--n-train", "24", "--n-val", "4", "--n-test", "8", "--n-compositional", "6"]


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VELM_PROFILE", raising=False)
    # no 2-second probe of the hub per load: this machine has no internet anyway
    monkeypatch.setattr("velm_course.text.hf_encoder.hub_reachable", lambda *a, **k: False)
    return tmp_path


def written_captions(run, split="test"):
    return {r["image_id"]: r["caption"] for r in json.loads((run / f"captions_{split}.json").read_text())}


def reloaded_captions(run, ds):
    """The test split captioned again by the captioner reloaded from the run folder alone."""
    model, tokenizer, _ = pipeline.load_captioner(run)
    beams = json.loads((run / "metrics.json").read_text())["selection"]["decoding"]["model"]["beam_width"]
    images = torch.stack([ds.get_uint8(i)[0] for i in range(len(ds))])
    return dict(zip(ds.image_ids, caption_images(model, images, tokenizer, beam_width=beams), strict=True))


def test_offline_the_run_falls_back_to_a_random_gpt2_over_words_and_resumes_without_the_hub(data_env, monkeypatch):
    run = data_env / "run"
    with pytest.warns(UserWarning, match="RANDOM weights over the caption words"):
        assert cli.main(["train", "--run-dir", str(run), *TINY, *SHAPES, "--d-model", "32", "--n-layer", "1"]) == 0
    saved = json.loads((run / "vocab.json").read_text())
    assert saved["gpt2"] == {"name": "gpt2", "source": "random"} and saved["words"][:3] == ["<pad>", "<bos>", "<eos>"]
    model, vocab, config = pipeline.load_captioner(run)
    assert isinstance(model, GPT2Captioner) and config.model.decoder == "gpt2"
    assert model.gpt2.config.n_embd == 32 and model.gpt2.config.n_layer == 1  # sized by the model settings
    blind, _, _ = pipeline.load_captioner(run, prefix="baseline_")
    assert blind.encoder is None and hasattr(blind, "blind_token")  # the baseline never sees the image
    # what the run wrote is what the reloaded captioner writes
    test = open_caption_data(config.data, seed=0, progress=False).test
    assert reloaded_captions(run, test) == written_captions(run)

    # a resumed run reads the GPT-2 from the run folder and its checkpoint: the hub is never asked
    def no_hub(*args, **kwargs):
        raise AssertionError("load_gpt2 called on resume")

    monkeypatch.setattr("velm_course.multimodal.hf_gpt2.load_gpt2", no_hub)
    assert cli.main(["train", "--resume", str(run), "--steps", "8", "--no-progress"]) == 0
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)][-1] == 8


def pretrained_folder(tmp_path):
    """A "pretrained" GPT-2 (random weights, then perturbed: nothing like a fresh init) saved with a
    byte-level BPE tokenizer, as ``save_pretrained`` lays out GPT-2 on the hub."""
    tok = tiny_bpe(tmp_path / "tok")
    end = tok.eos_token_id
    torch.manual_seed(3)
    gpt2 = small_gpt2(GPT2CaptionerConfig(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, max_len=128,
                                          bos_id=end, eos_id=end, pad_id=0))
    with torch.no_grad():
        for p in gpt2.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path / "gpt2-pretrained"
    gpt2.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, gpt2.state_dict()


def test_a_pretrained_gpt2_with_bpe_on_the_coco_path_with_cached_features(data_env, monkeypatch, capsys):
    folder, weights = pretrained_folder(data_env)
    shapes = ensure_shapes(ShapesConfig(image_size=64, n_train=24, n_val=4, n_test=8, seed=0),
                           data_root=data_env / "data", progress=False)
    coco = pack_shapes_as_coco(shapes, data_env / "coco")

    starts = []  # the GPT-2 weights each training starts from
    real_fit = pipeline.fit

    def recording_fit(model, *args, **kwargs):
        starts.append({k: v.clone() for k, v in model.gpt2.state_dict().items()})
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(pipeline, "fit", recording_fit)
    run = data_env / "run"
    assert cli.main(["train", "--run-dir", str(run), "--dataset", "coco", "--root", str(coco), "--encoder", "resnet18",
                     "--freeze-encoder", "--feature-cache", "--gpt2-name", str(folder), *TINY]) == 0

    # both the captioner and the blind baseline start from the folder's weights; cross-attention is new
    assert len(starts) == 2
    for start in starts:
        assert start.keys() == weights.keys()
        self_attention = [k for k in weights if ".attn." in k]
        assert self_attention and all(torch.equal(start[k], weights[k]) for k in self_attention)
    saved = json.loads((run / "vocab.json").read_text())
    assert saved["tokenizer"] == "gpt2-bpe" and saved["words"] is None
    assert saved["gpt2"]["source"] == f"local:{folder}"
    assert {"config.json", "tokenizer.json"} <= {p.name for p in (run / "gpt2").iterdir()}
    assert not list((run / "gpt2").glob("*.safetensors"))  # the weights live in the checkpoints only

    # the captions were BPE tokens: the longest training caption in tokens, the HF datasets cache read it
    tokenizer, max_tokens = pipeline._saved_vocab(run)
    assert isinstance(tokenizer, GPT2CaptionTokenizer)
    train = coco_split(coco, "train")
    assert max_tokens == max(len(tokenizer.encode(c)) for caps in train.captions_by_id().values() for c in caps)
    assert list((data_env / "data").rglob("tokenized/train-*.arrow"))

    # reloaded with the frozen encoder from encoder.pt, it writes from pixels what it wrote from the cache
    test = coco_split(coco, "test")
    assert reloaded_captions(run, test) == written_captions(run)
    capsys.readouterr()
    image = next((coco / "val2014").glob("*.png"))
    assert cli.main(["caption", "--run-dir", str(run), str(image)]) == 0
    assert capsys.readouterr().out.startswith(f"{image}\t")


def test_coco_in_the_full_profile_brings_the_recipe_and_options_still_win():
    args = cli.build_parser().parse_args(["train", "--profile", "full", "--dataset", "coco", "--steps", "7",
                                          "--encoder", "resnet50"])
    config, _ = cli.config_from_args(args)
    m = config.model
    assert (m.decoder, m.freeze_encoder, m.feature_cache, m.pretrained, config.data.image_size) == (
        "gpt2", True, True, True, 224)
    assert (config.train.steps, m.encoder) == (7, "resnet50")  # the command line wins over the preset
    shapes, _ = cli.config_from_args(cli.build_parser().parse_args(["train", "--profile", "full"]))
    assert shapes.model.decoder == "course" and shapes.data.image_size == 128  # no preset for shapes
    ci, _ = cli.config_from_args(cli.build_parser().parse_args(["train", "--dataset", "coco"]))
    assert ci.model.decoder == "course"  # the ci profile has no COCO preset


def test_gpt2_needs_cross_attention(capsys):
    assert cli.main(["train", "--decoder", "gpt2", "--fusion", "prefix", "--no-progress"]) == 2
    assert "reads the image through cross-attention only" in capsys.readouterr().err


def test_the_full_coco_recipe_runs_end_to_end_at_toy_sizes(data_env):
    """``--profile full --dataset coco`` as on a GPU (CLIP's grid cached, GPT-2 reading it), with
    only what a CPU test cannot afford changed: random CLIP weights, 64-pixel images, two steps."""
    shapes = ensure_shapes(ShapesConfig(image_size=64, n_train=12, n_val=4, n_test=4, seed=1),
                           data_root=data_env / "data", progress=False)
    coco = pack_shapes_as_coco(shapes, data_env / "coco")
    run = data_env / "run"
    with pytest.warns(UserWarning, match="RANDOM weights over the caption words"):
        assert cli.main(["train", "--profile", "full", "--dataset", "coco", "--root", str(coco), "--run-dir", str(run),
                         "--no-pretrained", "--image-size", "64", "--min-word-count", "1", "--num-workers", "0",
                         "--steps", "2", "--warmup", "1", "--batch-size", "4", "--val-every", "1", "--val-batches", "1",
                         "--device", "cpu", "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["model"]["encoder"], config["model"]["decoder"], config["model"]["feature_cache"]) == (
        "clip", "gpt2", True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "coco-clip-random-64px-" in metrics["feature_cache"] and metrics["n_images"] == {"test": 4}
    model, _, _ = pipeline.load_captioner(run)
    assert type(model.encoder).__name__ == "CLIPVisionEncoder"  # captions new images through CLIP itself
