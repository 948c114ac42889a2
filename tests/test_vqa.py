"""VQA data and model: answer vocabulary, question encoding and bad input, batches, the
pretrained weights at step 0, freezing and learning-rate ratios, the ablations."""

import json

import pytest
import torch
from PIL import Image

from velm_course.data.captions import PAD, CaptionVocab
from velm_course.data.coco import DatasetNotFoundError
from velm_course.data.shapes import (
    QUESTION_TYPES,
    ShapesConfig,
    ensure_shapes,
    render_scene,
    sample_scene,
)
from velm_course.data.vqa import (
    UNK_ANSWER,
    AnswerVocab,
    VQATensors,
    encode_questions,
    read_questions,
    vqa_batches,
    write_vqa_annotations,
)
from velm_course.engine import TrainConfig, fit
from velm_course.eval.vqa import read_vqa_annotations, score_vqa
from velm_course.multimodal.pretrainer import Pretrainer, PretrainerConfig
from velm_course.multimodal.vqa import (
    VQAConfig,
    VQAModel,
    answer_images,
    finetune_lr_scale,
    load_pretrained,
    predict_answers,
    vqa_loss,
)
from velm_course.vision.encoders import CNNEncoder, CNNEncoderConfig

CFG = ShapesConfig(image_size=48, n_train=30, n_val=6, n_test=6, seed=3, n_compositional=6)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return ensure_shapes(CFG, data_root=tmp_path_factory.mktemp("data"), progress=False)


@pytest.fixture(scope="module")
def vocab(root):
    questions = read_questions(root, "train")
    return CaptionVocab.build([q["question"] for q in questions] + ["a red circle"])


def tiny_vqa(vocab, n_answers=8, **kw):
    return VQAModel(VQAConfig(vocab_size=len(vocab), image_dim=8, n_answers=n_answers, d_model=16, n_head=2,
                              max_len=16, **kw))


def tiny_pretrainer(vocab, seed=0):
    torch.manual_seed(seed)
    return Pretrainer(PretrainerConfig(vocab_size=len(vocab), image_dim=8, n_attributes=36, d_model=16,
                                       embed_dim=8, n_layer=2, n_head=2, max_len=16, seed=seed))


# ---------------------------------------------------------------------------------------------
# data

def test_every_split_has_every_question_type(root):
    for split in ("train", "val", "test", "compositional"):
        questions = read_questions(root, split)
        assert questions and {q["type"] for q in questions} <= set(QUESTION_TYPES)
    assert {q["type"] for q in read_questions(root, "train")} == set(QUESTION_TYPES)


def test_answer_vocabulary_reserves_unknown():
    answers = AnswerVocab.build(["yes", "no", "yes", "two", "2", "red"])
    assert answers.itos[0] == "<unk>" and answers.itos[1:3] == ["2", "yes"]  # "two" is "2"
    assert answers.encode("Yes") == answers.stoi["yes"]
    assert answers.encode("purple star") == UNK_ANSWER  # never seen in training
    assert answers.decode(answers.encode("two")) == "2"
    assert AnswerVocab.build(["a", "b", "b"], min_count=2).itos == ["<unk>", "b"]
    assert len(AnswerVocab.build(["x", "y", "y", "z"], max_size=1)) == 2
    with pytest.raises(ValueError, match="starts with"):
        AnswerVocab(["yes", "no"])


def test_unknown_answers_carry_no_loss_and_count_as_wrong(vocab):
    torch.manual_seed(0)
    model = tiny_vqa(vocab, n_answers=4)
    grid, pooled = torch.randn(3, 5, 8), torch.randn(3, 8)
    question = encode_questions(vocab, ["is there a red circle"] * 3, 8)
    answer = torch.tensor([UNK_ANSWER, 2, UNK_ANSWER])
    loss, count = vqa_loss(model, {"grid": grid, "pooled": pooled, "question": question, "answer": answer})
    assert int(count) == 1
    only = torch.nn.functional.cross_entropy(model(grid, pooled, question)[1:2], answer[1:2], reduction="sum")
    assert torch.allclose(loss, only)
    # even when the model's largest logit is the reserved one, it is never the prediction
    with torch.no_grad():
        model.head[-1].bias[UNK_ANSWER] = 1e4
    pred = predict_answers(model, grid, pooled, question, torch.arange(3))
    assert (pred != UNK_ANSWER).all()
    answers = AnswerVocab(["<unk>", "yes", "no", "red"])
    scored = score_vqa({i: answers.decode(p) for i, p in enumerate(pred.tolist())},
                       {0: ["purple"], 1: ["no"], 2: ["purple"]})
    assert scored["accuracy"] <= 1 / 3  # the two unknown answers are wrong whatever is predicted


def test_questions_with_unknown_words_empty_or_too_long(vocab):
    ids = encode_questions(vocab, ["what colour is the moon"], 8)[0]
    words = [vocab.itos[i] for i in ids if i != PAD]
    assert words[0] == "<bos>" and words[-1] == "<eos>" and words.count("<unk>") == 2  # colour, moon
    for empty in ("", "   ", "?!"):
        with pytest.raises(ValueError, match="empty"):
            encode_questions(vocab, ["is there a red circle", empty], 8)
    with pytest.raises(ValueError, match="more than max_len"):
        encode_questions(vocab, ["is there a red circle"], 3)


def test_read_questions_names_the_fix(tmp_path, root):
    with pytest.raises(DatasetNotFoundError, match="ensure_shapes"):
        read_questions(tmp_path, "train")
    old = tmp_path / "annotations"
    old.mkdir()
    data = json.loads((root / "annotations" / "vqa_val.json").read_text())
    data["info"].pop("questions_version")  # a folder from before the size questions
    (old / "vqa_val.json").write_text(json.dumps(data))
    with pytest.raises(DatasetNotFoundError, match="version 1"):
        read_questions(tmp_path, "val")


def test_tensors_fractions_and_resumable_batches(root, vocab):
    questions = read_questions(root, "train")
    image_ids = sorted({q["image_id"] for q in questions})
    answers = AnswerVocab.build(q["answer"] for q in questions)
    data = VQATensors.build(questions, image_ids, vocab, answers, max_words=12)
    assert len(data) == len(questions) and data.question.shape[1] == 14
    q = questions[7]
    assert data.image[7] == image_ids.index(q["image_id"]) and answers.decode(data.answer[7]) == q["answer"]
    small, mid = data.fraction(0.1, seed=1), data.fraction(0.5, seed=1)
    assert set(small.question_id) < set(mid.question_id) < set(data.question_id)  # nested
    assert len(data.fraction(1e-6, seed=0)) == 1
    with pytest.raises(ValueError):
        data.fraction(0, seed=0)
    with pytest.raises(ValueError, match="not in the feature table"):
        VQATensors.build(questions, image_ids[1:], vocab, answers, 12)
    grid, pooled = torch.randn(len(image_ids), 5, 8), torch.randn(len(image_ids), 8)
    batches = vqa_batches(data, grid, pooled, batch_size=8, seed=0, steps=6)
    full = list(batches(0))
    resumed = list(batches(4))
    assert len(full) == 6 and len(resumed) == 2
    for a, b in zip(full[4:], resumed, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    first = full[0]
    longest = int((first["question"] != PAD).sum(dim=1).max())
    assert first["grid"].shape == (8, 5, 8) and first["question"].shape == (8, longest) and longest < 14


def test_shapes_questions_in_vqa_v2_format(tmp_path, root):
    questions = read_questions(root, "val")
    write_vqa_annotations(questions, tmp_path / "ann.json")
    answers, types = read_vqa_annotations(tmp_path / "ann.json")
    truth = {q["question_id"]: q["answer"] for q in questions}
    assert score_vqa(truth, answers, types)["accuracy"] == 1.0
    wrong = {i: "purple" for i in truth}
    assert score_vqa(wrong, answers, types)["accuracy"] < 0.2


# ---------------------------------------------------------------------------------------------
# model

def test_pretrained_weights_are_loaded_not_reinitialised(vocab):
    pretrainer = tiny_pretrainer(vocab)
    with torch.no_grad():  # move every weight away from any initialisation
        for p in pretrainer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    torch.manual_seed(123)
    model = VQAModel.from_pretrainer(pretrainer, n_answers=6)
    theirs = pretrainer.state_dict()
    for ours_part, their_part in (("image", "image"), ("text", "text"), ("fusion", "itm_fusion")):
        for name, value in getattr(model, ours_part).state_dict().items():
            assert torch.equal(value, theirs[f"{their_part}.{name}"]), (ours_part, name)
    # the same at step 0 of fine-tuning, inside the engine (steps=0 trains nothing)
    fit(model, vqa_loss, lambda start: iter(()), TrainConfig(steps=0, device="cpu"), progress=False)
    assert torch.equal(model.text.tok_emb.weight, pretrainer.text.tok_emb.weight)
    # and the model computes what the pretrainer's matching path computes, up to the new head
    grid, pooled = torch.randn(2, 5, 8), torch.randn(2, 8)
    question = encode_questions(vocab, ["is there a red circle", "what shape is the red object"], 8)
    seen = {}
    model.head.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", inp[0]))
    pretrainer.eval(), model.eval()
    with torch.no_grad():
        model(grid, pooled, question)
        tokens, vec = pretrainer.image(grid, pooled)
        states, _ = pretrainer.text(question)
        fused = pretrainer.itm_fusion(states, tokens, vec, text_mask=question != PAD)[:, 0]
    assert torch.allclose(seen["x"], fused, atol=1e-6)


def test_load_pretrained_refuses_a_mismatch(vocab):
    pretrainer = tiny_pretrainer(vocab)
    wider = VQAModel(VQAConfig(vocab_size=len(vocab), image_dim=8, n_answers=5, d_model=32, n_head=2, max_len=16))
    with pytest.raises(ValueError, match="cannot load the pretrained 'image'"):
        load_pretrained(wider, pretrainer.state_dict())
    with pytest.raises(KeyError, match="itm_fusion"):
        load_pretrained(tiny_vqa(vocab), {k: v for k, v in pretrainer.state_dict().items()
                                          if not k.startswith("itm_fusion.")})


def finetune(model, steps=3, lr_scale=None):
    torch.manual_seed(0)
    grid, pooled = torch.randn(16, 5, 8), torch.randn(16, 8)
    vocab_ids = torch.randint(4, 10, (16, 6))
    question = torch.cat([torch.ones(16, 1, dtype=torch.long), vocab_ids, torch.full((16, 1), 2)], dim=1)
    data = {"grid": grid, "pooled": pooled, "question": question, "answer": torch.randint(1, 5, (16,))}
    cfg = TrainConfig(steps=steps, batch_size=16, lr=1e-2, warmup=1, device="cpu", weight_decay=0.0)
    fit(model, vqa_loss, lambda start: (data for _ in range(start, steps)), cfg, progress=False,
        lr_scale=lr_scale)


def test_freezing_and_smaller_learning_rate_for_the_pretrained_parts(vocab):
    pretrainer = tiny_pretrainer(vocab)
    start = VQAModel.from_pretrainer(pretrainer, n_answers=6).state_dict()
    frozen = VQAModel.from_pretrainer(pretrainer, n_answers=6).freeze_pretrained()
    finetune(frozen)
    after = frozen.state_dict()
    for name, value in after.items():
        moved = not torch.equal(value, start[name])
        assert moved == name.startswith("head."), name  # only the head trained

    def moves(lr_scale):
        torch.manual_seed(5)
        model = VQAModel.from_pretrainer(pretrainer, n_answers=6)
        model.head.load_state_dict({k[5:]: v for k, v in start.items() if k.startswith("head.")})
        finetune(model, steps=1, lr_scale=lr_scale)
        new = model.state_dict()
        return {part: max((new[k] - start[k]).abs().max().item() for k in new if k.startswith(part))
                for part in ("image.", "text.", "fusion.", "head.")}

    full, gentle = moves(None), moves(finetune_lr_scale(0.1))
    # Adam's first step moves each weight by about lr (the sign of its gradient), so a tenth of
    # the rate moves the pretrained parts a tenth as far, and the head as far as before
    for part in ("image.", "text.", "fusion."):
        assert gentle[part] == pytest.approx(0.1 * full[part], rel=0.05), part
    assert gentle["head."] == pytest.approx(full["head."], rel=1e-5)


def test_ablations_remove_exactly_one_input(vocab):
    grid, pooled = torch.randn(2, 5, 8), torch.randn(2, 8)
    other_grid, other_pooled = torch.randn(2, 5, 8), torch.randn(2, 8)
    q1 = encode_questions(vocab, ["is there a red circle", "what shape is the red object"], 8)
    q2 = encode_questions(vocab, ["how many shapes are there", "is there a red circle"], 8)
    outputs = {}
    for inputs in ("both", "question", "image"):
        torch.manual_seed(0)
        model = tiny_vqa(vocab, inputs=inputs).eval()
        with torch.no_grad():
            outputs[inputs] = (model(grid, pooled, q1), model(other_grid, other_pooled, q1),
                               model(grid, pooled, q2))
    same = lambda a, b: torch.allclose(a, b, atol=1e-6)  # noqa: E731
    base, new_image, new_question = outputs["both"]
    assert not same(base, new_image) and not same(base, new_question)  # the full model reads both
    base, new_image, new_question = outputs["question"]
    assert same(base, new_image) and not same(base, new_question)  # blind
    base, new_image, new_question = outputs["image"]
    assert not same(base, new_image) and same(base, new_question)  # deaf
    with pytest.raises(ValueError, match="inputs must be"):
        VQAConfig(vocab_size=10, image_dim=8, n_answers=3, inputs="text")


def test_answer_images_any_size_and_mode(tmp_path, vocab):
    import random

    torch.manual_seed(0)
    encoder = CNNEncoder(CNNEncoderConfig(d_model=8, image_size=48, widths=(4, 4, 8, 8)))
    model = tiny_vqa(vocab)
    answers = AnswerVocab(["<unk>", "yes", "no", "red", "two", "small", "circle", "blue"])
    scene = render_scene(sample_scene(random.Random(0), CFG), 48)
    scene.save(tmp_path / "scene.png")
    images = [scene, scene.resize((100, 70)).convert("RGBA"), scene.convert("L"), tmp_path / "scene.png"]
    questions = ["is there a red circle", "what size is the red circle", "what colour is it", "how many shapes"]
    got = answer_images(model, encoder, vocab, answers, images, questions, max_words=8)
    assert len(got) == 4 and all(a in answers.itos[1:] for a in got)
    # a file and the image it holds get the same answer
    assert got[3] == answer_images(model, encoder, vocab, answers, [scene], [questions[3]], 8)[0]
    with pytest.raises(ValueError, match="empty"):
        answer_images(model, encoder, vocab, answers, [scene], [""], 8)
    with pytest.raises(ValueError, match="1 images but 2 questions"):
        answer_images(model, encoder, vocab, answers, [scene], questions[:2], 8)
    Image.new("RGB", (48, 48)).save(tmp_path / "black.png")
    assert len(answer_images(model, encoder, vocab, answers, [tmp_path / "black.png"], ["is there"], 8)) == 1
