"""Data from one file: word-level tokens of a local text file, used by a scenario as
``data: {kind: plugin, plugin: word_data.py:WordText, args: {path: book.txt}}``.

``path`` and ``tokenizer`` are annotated ``Path``: locosim resolves them relative to the
scenario file, as it does every other path in a scenario (sim/paths.py), and records the
sha256 of the files they name in the run's manifest (its fingerprints).

locosim calls ``WordText(seq_len=T, n_workers=M, seed=S, **args)`` once and then asks it for
batches: ``train_batch(g, worker, batch_size)`` and ``eval_batch(g, batch_size)`` return int64
arrays [batch_size, T + 1] (inputs and next-token targets), drawn with the numpy generator
``g`` it is given (a named stream: the run stays reproducible). ``vocab_size`` sizes the model;
``loss_floor`` (None here) is drawn on the dashboards when known.

With Hugging Face's libraries installed, the same shape of class wraps them: tokenize with
``tokenizers.Tokenizer.from_file("tokenizer.json").encode(text).ids`` (the ``tokenizer``
argument below), or take the text of a ``datasets`` dataset you have on disk
(``datasets.load_from_disk(path)["train"]["text"]``) instead of reading one file. Nothing is
downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class WordText:
    def __init__(self, seq_len: int, n_workers: int, seed: int, path: Path, eval_fraction: float = 0.1,
                 tokenizer: Path | None = None):
        text = Path(path).read_text(encoding="utf-8")
        if tokenizer is not None:  # a Hugging Face tokenizer file (needs the `tokenizers` package)
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(tokenizer))
            tokens = np.asarray(tok.encode(text).ids, dtype=np.int64)
            self.vocab_size = int(tok.get_vocab_size())
        else:
            words = text.split()
            vocab = sorted(set(words))
            lut = {w: i for i, w in enumerate(vocab)}
            tokens = np.array([lut[w] for w in words], dtype=np.int64)
            self.vocab_size = len(vocab)
        n_eval = max(int(len(tokens) * eval_fraction), seq_len + 1)
        if len(tokens) - n_eval < seq_len + 1:
            raise ValueError(f"{path}: {len(tokens)} tokens are too few for seq_len {seq_len}")
        self.train, self.eval = tokens[:-n_eval], tokens[-n_eval:]
        self.seq_len = seq_len
        self.loss_floor = None

    def _windows(self, g: np.random.Generator, tokens: np.ndarray, batch_size: int) -> np.ndarray:
        starts = g.integers(0, len(tokens) - self.seq_len, size=batch_size)
        return tokens[starts[:, None] + np.arange(self.seq_len + 1)]

    def train_batch(self, g: np.random.Generator, worker: int, batch_size: int) -> np.ndarray:
        return self._windows(g, self.train, batch_size)

    def eval_batch(self, g: np.random.Generator, batch_size: int) -> np.ndarray:
        return self._windows(g, self.eval, batch_size)
