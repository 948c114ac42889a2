"""The training engine: checkpoints, exact resume after SIGKILL/SIGTERM/Ctrl-C, config checks,
gradient accumulation, DistributedDataParallel on CPU (gloo), out-of-memory advice."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest
import torch

from velm_course.data.captions import BOS, EOS, PAD
from velm_course.data.loader import tensor_batches
from velm_course.engine import distributed
from velm_course.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    save_checkpoint,
)
from velm_course.engine.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    resume_conflicts,
)
from velm_course.engine.precision import autocast, resolve_precision
from velm_course.engine.trainer import OutOfMemory, RunFolderInUse, evaluate_loss, fit, lr_lambda
from velm_course.multimodal.captioner import Captioner, CaptionerConfig
from velm_course.pipeline import captioner_loss

# A worker that trains a small captioner with dropout through the engine; the tests run it in
# a subprocess so they can kill it like a scheduler or a Colab disconnect would.
WORKER = textwrap.dedent('''
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_engine import toy_batches, toy_captioner, TRAIN
    from velm_course.engine.trainer import fit, TrainingInterrupted
    from velm_course.pipeline import captioner_loss
    from dataclasses import replace
    torch.set_num_threads(1)
    run_dir, steps, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    cfg = replace(TRAIN, steps=steps)
    def slow_loss(model, batch):
        time.sleep(delay)  # gives the test time to interrupt mid-run
        return captioner_loss(model, batch)
    torch.manual_seed(0)
    model = toy_captioner()
    try:
        fit(model, slow_loss, toy_batches(cfg), cfg, run_dir=run_dir, resume=True, progress=False,
            config={{"model": "toy", "train": {{"steps": steps}}}})
    except TrainingInterrupted as err:
        print("interrupted:", err, flush=True)
        sys.exit(3)
    torch.save(model.state_dict(), run_dir + "/final.pt")
''')

TRAIN = TrainConfig(steps=10, batch_size=4, lr=3e-3, warmup=2, checkpoint_every=3, log_every=1, seed=0,
                    device="cpu", keep_last=2, checkpoint_minutes=60.0)


def toy_tensors(n: int = 12, seed: int = 0) -> dict:
    """Random uint8 images and captions of different lengths (so token counts differ per row)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g)
    tokens = torch.full((n, 8), PAD)
    for i in range(n):
        length = 2 + i % 5
        tokens[i, 0] = BOS
        tokens[i, 1 : 1 + length] = torch.randint(4, 12, (length,), generator=g)
        tokens[i, 1 + length] = EOS
    from velm_course.data.captions import caption_targets

    idx, targets = caption_targets(tokens)
    return {"images": images, "idx": idx, "targets": targets}


def toy_batches(cfg: TrainConfig, n: int = 12):
    return tensor_batches(toy_tensors(n), cfg.batch_size, cfg.seed, cfg.steps, cfg.grad_accum)


def toy_captioner(dropout: float = 0.1, encoder: str = "small_cnn") -> Captioner:
    return Captioner(CaptionerConfig(vocab_size=12, d_model=16, n_layer=1, n_head=2, max_len=8,
                                     dropout=dropout, image_size=64, encoder=encoder))


def train_toy(tmp_path, cfg=TRAIN, dropout=0.1, encoder="small_cnn", **kw):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = toy_captioner(dropout, encoder)
    history = fit(model, captioner_loss, toy_batches(cfg), cfg, run_dir=tmp_path, progress=False,
                  config={"model": "toy", "train": {"steps": cfg.steps}}, **kw)
    return model, history


def assert_same_training(a: dict, b: dict) -> None:
    """Equal weights to float tolerance, except the key half of attention's kv_proj bias: a key
    bias adds the same score to every key, which the softmax cancels, so its true gradient is 0;
    AdamW divides the round-off left there by its own tiny running norm and moves it by ~lr. Those
    entries are held to a loose bound."""
    for name, p in a.items():
        q = b[name]
        if name.endswith("kv_proj.bias"):
            C = p.shape[0] // 2
            torch.testing.assert_close(p[:C], q[:C], rtol=0, atol=1e-4, msg=name + " (keys)")
            p, q = p[C:], q[C:]
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- schedule, loss


def test_lr_schedule_hand_worked():
    f = lr_lambda(TrainConfig(steps=20, warmup=4, min_lr_ratio=0.5))
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # halfway through the cosine: floor + (1 - floor) * (1 + cos(pi/2)) / 2 = 0.5 + 0.25
    assert f(12) == pytest.approx(0.75)
    assert f(20) == pytest.approx(0.5)


def test_loss_goes_down_and_is_logged(tmp_path):
    cfg = replace(TRAIN, steps=60, checkpoint_every=0, log_every=5, lr=1e-2)
    model, history = train_toy(tmp_path, cfg, dropout=0.0)
    assert [h["step"] for h in history] == list(range(5, 61, 5))
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]  # from about ln 12 to memorised captions
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == history
    assert {"loss", "lr", "items_per_s", "grad_norm", "clipped", "data_wait"} <= set(lines[0])
    f = lr_lambda(cfg)  # the logged rate is the one the logged step used
    assert [h["lr"] for h in history[:2]] == pytest.approx([cfg.lr * f(4), cfg.lr * f(9)])


def test_fit_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_toy(None, replace(TRAIN, steps=2, checkpoint_every=0))
    assert torch.equal(torch.rand(3), expected)


def test_loss_is_averaged_over_every_token_of_the_step():
    """The engine's mean equals the plain mean cross-entropy over all scored tokens of the batch."""
    cfg = replace(TRAIN, steps=1, batch_size=12, grad_accum=1, lr=1e-9, warmup=1)
    torch.manual_seed(0)
    model = toy_captioner(dropout=0.0)
    batch = next(iter(toy_batches(cfg)(0)))
    expected = model(batch["images"].float() / 255, batch["idx"], batch["targets"])[1].item()
    history = fit(model, captioner_loss, toy_batches(cfg), cfg, progress=False)
    assert history[0]["loss"] == pytest.approx(expected, rel=1e-5)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """Batch 8 in one piece and batch 4 twice take the same steps: the loss is averaged over
    the tokens of the whole step, not per micro-batch (the captions differ in length).
    The ViT encoder has no BatchNorm, whose statistics would differ per micro-batch."""
    big = replace(TRAIN, batch_size=8, grad_accum=1, steps=5, checkpoint_every=0)
    small = replace(big, batch_size=4, grad_accum=2)
    a, _ = train_toy(tmp_path / "a", big, dropout=0.0, encoder="course_vit")
    b, _ = train_toy(tmp_path / "b", small, dropout=0.0, encoder="course_vit")
    assert_same_training(a.state_dict(), b.state_dict())
    # and the check can fail: per-micro-batch averaging would give other weights
    c, _ = train_toy(tmp_path / "c", replace(big, batch_size=4, grad_accum=1, steps=10), dropout=0.0,
                     encoder="course_vit")
    assert not torch.allclose(a.lm_head.weight, c.lm_head.weight, atol=1e-4)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_holds_the_whole_state_and_loads_weights_only(tmp_path):
    model, _ = train_toy(tmp_path, replace(TRAIN, steps=6))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # no pickled code needed
    assert state["step"] == 6 and set(state["model"]) == set(model.state_dict())
    for key in ("optimizer", "scheduler", "rng", "config", "config_hash", "package_version", "history"):
        assert key in state
    assert "cpu" in state["rng"][0]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000003.pt", "step-00000006.pt"]
    assert same_weights(state["model"], model.state_dict())


def test_keep_last_prunes_old_step_files(tmp_path):
    train_toy(tmp_path, replace(TRAIN, steps=10, checkpoint_every=2, keep_last=2))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000008.pt", "step-00000010.pt"]


def test_best_checkpoint_follows_validation_loss(tmp_path):
    cfg = replace(TRAIN, steps=12, val_every=4, val_batches=2, lr=1e-2)
    val = toy_batches(replace(cfg, seed=1))
    _, history = train_toy(tmp_path, cfg, val_batches=lambda: val(0))
    vals = [h for h in history if "val_loss" in h]
    assert [h["step"] for h in vals] == [4, 8, 12]
    best_step = min(vals, key=lambda h: h["val_loss"])["step"]
    assert load_checkpoint(tmp_path / "best.pt")["step"] == best_step


def test_patience_stops_when_validation_stops_improving_and_resume_stays_stopped(tmp_path, monkeypatch):
    cfg = replace(TRAIN, steps=20, val_every=2, val_batches=1, patience=2)
    val = toy_batches(replace(cfg, seed=1))
    # a validation loss scripted to improve twice and then get worse: stop at the 4th check
    scripted = iter([3.0, 2.0, 2.5, 2.6, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    monkeypatch.setattr("velm_course.engine.trainer.evaluate_loss", lambda *a, **k: next(scripted))
    _, history = train_toy(tmp_path, cfg, val_batches=lambda: val(0))
    vals = [h for h in history if "val_loss" in h]
    assert [h["step"] for h in vals] == [2, 4, 6, 8]
    assert vals[-1].get("stopped_early") and not any(h.get("stopped_early") for h in vals[:-1])
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 8
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 4
    # resuming a run that stopped early trains no further
    _, again = train_toy(tmp_path, cfg, val_batches=lambda: val(0), resume=True)
    assert again == history and load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 8
    # patience 0 never stops
    scripted = iter([3.0] + [4.0] * 20)
    _, history = train_toy(tmp_path / "b", replace(cfg, patience=0), val_batches=lambda: val(0))
    assert history[-1]["step"] == 20


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)
    save_checkpoint(tmp_path / "partial.pt", {"model": {}, "step": 1})
    with pytest.raises(CheckpointError, match=r"partial.pt: missing entries \['format', 'optimizer'"):
        load_checkpoint(tmp_path / "partial.pt")
    # a truncated file (a crash mid-copy elsewhere): refused, not half-loaded
    train_toy(tmp_path / "run", replace(TRAIN, steps=3))
    data = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")


def test_save_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous checkpoint intact."""
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    assert torch.load(path, weights_only=True) == {"step": 1}


def test_a_run_folder_is_not_overwritten(tmp_path):
    train_toy(tmp_path, replace(TRAIN, steps=3))
    with pytest.raises(RunFolderInUse, match="--resume"):
        train_toy(tmp_path, replace(TRAIN, steps=3))


# ----------------------------------------------------------------------------- exact resume


def run_worker(run_dir, steps, delay=0.0, wait_for_step=None, send=None):
    """Start the worker; optionally send a signal once checkpoint.pt holds ``wait_for_step``."""
    script = run_dir.parent / "worker.py"
    script.write_text(WORKER.format(tests=os.path.dirname(__file__)))
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(steps), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if send is not None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if load_checkpoint(run_dir / "checkpoint.pt")["step"] >= wait_for_step:
                    break
            except (FileNotFoundError, CheckpointError):
                pass
            time.sleep(0.05)
        proc.send_signal(send)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("reference") / "run"
    rc, out, err = run_worker(run, steps=10)
    assert rc == 0, err
    return torch.load(run / "final.pt", weights_only=True)


def test_sigkill_then_resume_gives_bit_identical_weights(tmp_path, uninterrupted):
    run = tmp_path / "run"
    rc, _, _ = run_worker(run, steps=10, delay=0.3, wait_for_step=3, send=signal.SIGKILL)
    assert rc == -signal.SIGKILL
    killed_at = load_checkpoint(run / "checkpoint.pt")["step"]
    assert 3 <= killed_at < 10 and not (run / "final.pt").exists()
    rc, _, err = run_worker(run, steps=10)
    assert rc == 0, err
    resumed = torch.load(run / "final.pt", weights_only=True)
    assert same_weights(resumed, uninterrupted)  # dropout > 0: the RNG state was restored
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == list(range(1, 11))  # no step logged twice


def test_resume_without_rng_restore_would_differ(tmp_path, uninterrupted, monkeypatch):
    """The check above can fail: resuming with a fresh random state changes the dropout masks."""
    run = tmp_path / "run"
    rc, _, _ = run_worker(run, steps=4)
    assert rc == 0
    torch.manual_seed(0)
    model = toy_captioner()
    monkeypatch.setattr("velm_course.engine.trainer._set_rng_state", lambda state: None)
    fit(model, captioner_loss, toy_batches(TRAIN), TRAIN, run_dir=run, resume=True, progress=False,
        config={"model": "toy", "train": {"steps": 10}})
    assert not same_weights(model.state_dict(), uninterrupted)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_and_ctrl_c_save_then_resume_exactly(tmp_path, uninterrupted, sig):
    run = tmp_path / "run"
    rc, out, _ = run_worker(run, steps=10, delay=0.3, wait_for_step=1, send=sig)
    assert rc == 3 and "interrupted: stopped at step" in out
    stopped_at = load_checkpoint(run / "checkpoint.pt")["step"]
    assert 1 <= stopped_at < 10 and f"step {stopped_at}" in out  # saved at the step it stopped
    rc, _, err = run_worker(run, steps=10)
    assert rc == 0, err
    assert same_weights(torch.load(run / "final.pt", weights_only=True), uninterrupted)


def test_logged_window_means_are_right_after_a_resume(tmp_path):
    """A run resumed at step 3 with log_every=4 logs at steps 4 and 8; the row at 8 averages the
    gradient norms of steps 5..8, the same steps a per-step log of an uninterrupted run shows."""
    from velm_course.engine.trainer import TrainingInterrupted

    cfg = replace(TRAIN, steps=8, checkpoint_every=3)
    _, per_step = train_toy(tmp_path / "a", replace(cfg, log_every=1), dropout=0.0)
    calls = {"n": 0}

    def stop_in_step_3(model, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return captioner_loss(model, batch)

    windowed = replace(cfg, log_every=4)
    for loss_fn in (stop_in_step_3, captioner_loss):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = toy_captioner(dropout=0.0)
        try:
            history = fit(model, loss_fn, toy_batches(windowed), windowed, run_dir=tmp_path / "b", resume=True,
                          progress=False, config={"model": "toy", "train": {"steps": 8}})
        except TrainingInterrupted:
            assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    assert [h["step"] for h in history] == [4, 8]
    expected = sum(h["grad_norm"] for h in per_step[4:8]) / 4
    assert history[-1]["grad_norm"] == pytest.approx(expected, rel=1e-5)


def test_resume_refuses_other_settings_and_accepts_more_steps(tmp_path):
    cfg = replace(TRAIN, steps=4)
    torch.manual_seed(0)
    model = toy_captioner()
    config = RunConfig(train=cfg).to_dict()
    fit(model, captioner_loss, toy_batches(cfg), cfg, run_dir=tmp_path, config=config, progress=False)
    other = RunConfig(train=cfg, model=ModelConfig(d_model=64, n_layer=3)).to_dict()
    with pytest.raises(CheckpointError, match=r"model.d_model: 128 -> 64.*model.n_layer: 2 -> 3"):
        fit(toy_captioner(), captioner_loss, toy_batches(cfg), cfg, run_dir=tmp_path, config=other,
            resume=True, progress=False)
    longer = replace(cfg, steps=7)
    history = fit(toy_captioner(), captioner_loss, toy_batches(longer), longer, run_dir=tmp_path,
                  config=RunConfig(train=longer).to_dict(), resume=True, progress=False)
    assert history[-1]["step"] == 7 and load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 7


# ----------------------------------------------------------------------------- run config


def test_run_config_round_trip_and_named_errors(tmp_path):
    cfg = RunConfig(data=DataConfig(n_train=10), train=TrainConfig(steps=5))
    path = tmp_path / "config.json"
    cfg.save(path)
    assert RunConfig.load(path) == cfg
    path.write_text("")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        RunConfig.load(path)
    d = cfg.to_dict()
    del d["train"]
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="config.json: missing field 'train'"):
        RunConfig.load(path)
    d = cfg.to_dict()
    del d["model"]["n_head"]
    with pytest.raises(ConfigError, match="missing field 'model.n_head'"):
        RunConfig.from_dict(d)
    # a config written before model.feature_cache existed loads, with the default it ran with
    d = replace(cfg, model=replace(cfg.model, feature_cache=False)).to_dict()
    del d["model"]["feature_cache"]
    assert RunConfig.from_dict(d).model.feature_cache is False
    d = cfg.to_dict()
    d["train"]["steps"] = "many"
    with pytest.raises(ConfigError, match="field 'train.steps' should be"):
        RunConfig.from_dict(d)
    d = cfg.to_dict()
    d["train"]["colour"] = 1
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['train.colour'\]"):
        RunConfig.from_dict(d)
    d = cfg.to_dict()
    d["version"] = 0
    with pytest.raises(ConfigError, match="config version 0"):
        RunConfig.from_dict(d)
    assert cfg.digest() == RunConfig.from_dict(cfg.to_dict()).digest() != RunConfig().digest()


@pytest.mark.parametrize("section, field, value, message", [
    ("train", "steps", -5, "train.steps must be >= 1"),
    ("train", "batch_size", 0, "train.batch_size must be >= 1"),
    ("data", "image_size", 0, "data.image_size must be >= 1"),
    ("data", "dataset", "imagenet", "unknown data.dataset 'imagenet': choose from \\['shapes', 'coco', 'coco2017'\\]"),
    ("model", "encoder", "vgg", "unknown model.encoder 'vgg'"),
    ("train", "precision", "fp8", "unknown train.precision 'fp8'"),
    ("model", "dropout", 1.0, "model.dropout must be in"),
])
def test_out_of_range_settings_are_refused(section, field, value, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**{section: replace(getattr(RunConfig(), section), **{field: value})})


def test_resume_conflicts_name_fields():
    a = RunConfig().to_dict()
    assert resume_conflicts(a, RunConfig(train=TrainConfig(steps=10_000, checkpoint_every=5)).to_dict()) == []
    assert resume_conflicts(a, RunConfig(train=TrainConfig(lr=1.0)).to_dict()) == ["train.lr: 0.002 -> 1.0"]


# ----------------------------------------------------------------------------- precision, memory


def test_precision_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("bf16", cpu)
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", cpu)
    with autocast("fp32", cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_out_of_memory_says_what_would_fit():
    def oom(model, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    cfg = replace(TRAIN, batch_size=32, grad_accum=2)
    with pytest.raises(OutOfMemory, match="batch_size=32 per process and grad_accum=2.*--batch-size 16 --grad-accum 4"):
        fit(toy_captioner(), oom, toy_batches(cfg, n=64), cfg, progress=False)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(model):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    cfg = replace(TRAIN, steps=2, compile=True)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        history = fit(toy_captioner(), captioner_loss, toy_batches(cfg), cfg, progress=False)
    assert history[-1]["step"] == 2


def test_tensorboard_logging_and_its_absence(tmp_path, monkeypatch):
    cfg = replace(TRAIN, steps=4, tensorboard=True, log_every=2)
    train_toy(tmp_path / "with", cfg)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "with" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("model_loss")] == [2, 4]
    # without tensorboard installed, training goes on with a warning, logging to metrics.jsonl
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        train_toy(tmp_path / "without", cfg)
    assert (tmp_path / "without" / "metrics.jsonl").exists()


def test_evaluate_loss_is_the_token_mean():
    torch.manual_seed(0)
    model = toy_captioner(dropout=0.0)
    batch = toy_tensors(6)
    with torch.no_grad():
        expected = model.eval()(batch["images"].float() / 255, batch["idx"], batch["targets"])[1].item()
    model.train()
    halves = [{k: v[:3] for k, v in batch.items()}, {k: v[3:] for k, v in batch.items()}]
    assert evaluate_loss(model, captioner_loss, halves, 2, torch.device("cpu")) == pytest.approx(expected, rel=1e-5)


def test_checkpoint_manager_names_a_second_model(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=1, prefix="baseline_")
    manager.save({"step": 1}, is_best=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline_best.pt", "baseline_checkpoint.pt",
                                                          "baseline_checkpoints"]


# ----------------------------------------------------------------------------- DDP on the CPU


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str, batch_size: int, steps: int,
                dropout: float, stop_at: int | None):
    import torch.distributed as dist

    from velm_course.engine.trainer import TrainingInterrupted

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        assert distributed.info().world_size == world
        cfg = replace(TRAIN, batch_size=batch_size, steps=steps, checkpoint_every=2)
        torch.manual_seed(0)
        model = toy_captioner(dropout, encoder="course_vit")  # no BatchNorm: see above
        calls = 0

        def loss_fn(m, batch):
            nonlocal calls
            calls += 1
            if calls == stop_at and rank == 0:  # a scheduler stops one process: all must stop
                os.kill(os.getpid(), signal.SIGTERM)
            return captioner_loss(m, batch)

        try:
            fit(model, loss_fn, toy_batches(cfg), cfg, run_dir=out_dir, resume=True, progress=False,
                config={"model": "toy"})
            torch.save(model.state_dict(), f"{out_dir}/final-rank{rank}.pt")
        except TrainingInterrupted:
            pass
        # leave together: a rank tearing gloo down while the other still talks to it aborts
        # the other process ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ddp(tmp_path, name, world, batch_size, steps, dropout=0.0, stop_at=None):
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    init = tmp_path / f"{name}-init-{steps}-{stop_at}"
    torch.multiprocessing.spawn(_ddp_worker, args=(world, str(init), str(out), batch_size, steps, dropout, stop_at),
                                nprocs=world, join=True)
    return out


def test_ddp_two_processes_equal_one_process_with_the_whole_batch(tmp_path):
    one = run_ddp(tmp_path, "one", world=1, batch_size=8, steps=4)
    two = run_ddp(tmp_path, "two", world=2, batch_size=4, steps=4)
    ref = torch.load(one / "final-rank0.pt", weights_only=True)
    for rank in (0, 1):
        assert_same_training(torch.load(two / f"final-rank{rank}.pt", weights_only=True), ref)
    # only rank 0 wrote the run folder's files, once
    assert load_checkpoint(two / "checkpoint.pt")["world_size"] == 2
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 4


def test_ddp_stop_on_one_rank_then_resume_is_exact(tmp_path):
    """SIGTERM reaches rank 0 only: both ranks stop at the same step, save (every rank's random
    state), and the resumed run ends where the uninterrupted one does, dropout included."""
    straight = run_ddp(tmp_path, "straight", world=2, batch_size=4, steps=6, dropout=0.1)
    stopped = run_ddp(tmp_path, "stopped", world=2, batch_size=4, steps=6, dropout=0.1, stop_at=3)
    state = load_checkpoint(stopped / "checkpoint.pt")
    assert state["step"] == 3 and len(state["rng"]) == 2 and not (stopped / "final-rank0.pt").exists()
    run_ddp(tmp_path, "stopped", world=2, batch_size=4, steps=6, dropout=0.1)
    for rank in (0, 1):
        a = torch.load(straight / f"final-rank{rank}.pt", weights_only=True)
        b = torch.load(stopped / f"final-rank{rank}.pt", weights_only=True)
        assert same_weights(a, b)


def test_named_loss_terms_are_averaged_and_logged_like_the_loss():
    """A loss of several terms logs each one, averaged over the same count as the loss."""
    model = torch.nn.Linear(2, 1)
    x = torch.randn(8, 2)
    y = x.sum(1, keepdim=True)

    def loss_fn(m, batch):
        err = ((m(batch["x"]) - batch["y"]) ** 2).sum()
        size = batch["x"].abs().sum()  # a second term, constant in the weights
        return err + 0.5 * size, torch.tensor(len(batch["x"])), {"fit": err, "size": size}

    def batches(start_step):
        while True:
            yield {"x": x, "y": y}

    cfg = TrainConfig(steps=4, lr=1e-9, warmup=1, log_every=2, grad_accum=2, batch_size=8)
    history = fit(model, loss_fn, batches, cfg, progress=False)
    row = history[-1]
    assert row["loss_size"] == pytest.approx(x.abs().sum().item() / 8, rel=1e-5)
    assert row["loss"] == pytest.approx(row["loss_fit"] + 0.5 * row["loss_size"], rel=1e-5)
    with pytest.raises(TypeError, match="loss_fn must return"):
        fit(torch.nn.Linear(2, 1), lambda m, b: (m(b["x"]).sum(),), batches, cfg, progress=False)


def test_a_monitor_adds_its_measurements_to_logged_rows_and_changes_nothing():
    def run(monitor):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        x = torch.randn(8, 2)

        def batches(start_step):
            while True:
                yield {"x": x, "y": x.sum(1, keepdim=True)}

        def loss_fn(m, b):
            return ((m(b["x"]) - b["y"]) ** 2).sum(), torch.tensor(8)

        cfg = TrainConfig(steps=6, lr=0.05, warmup=1, log_every=3, batch_size=8)
        return model, fit(model, loss_fn, batches, cfg, progress=False, monitor=monitor)

    seen = []

    def monitor(model, step):
        seen.append(step)
        return {"weight_norm": model.weight.norm().item()}

    plain, _ = run(None)
    watched, history = run(monitor)
    assert seen == [3, 6]
    assert history[-1]["weight_norm"] == pytest.approx(watched.weight.norm().item())
    assert torch.equal(plain.weight, watched.weight)
