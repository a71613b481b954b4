"""Training data: a synthetic Markov language with an exactly known loss floor, or text.

Synthetic language
------------------
``topics`` sources, each an order-k Markov chain over the same ``V = vocab_size - topics``
symbols with the same sparse support (``branching`` possible successors per context) and
its own transition probabilities (a mix of a shared Dirichlet draw and a per-topic one,
weighted by ``topic_spread``). A sequence is ``[marker(topic), c_1..c_k, x_{k+1}, ...]``:
a topic marker token, an initial context drawn from the topic's stationary distribution,
then the chain. Because the marker reveals the topic and the start is stationary, the
best achievable cross-entropy at each predicted position is known exactly:

* positions 1..k: H(c_t | c_<t) under the topic's stationary context marginals;
* later positions: the topic's entropy rate, sum_s pi(s) H(P(.|s)).

The loss floor is their mean over positions and topics (eval samples topics uniformly).
Shards: ``iid`` (every worker samples topics uniformly) or ``non_iid`` (worker i draws its
own topic ``i mod topics`` with probability ``skew``, otherwise one of the others).

Text
----
A local UTF-8 file, character level; the tail ``eval_fraction`` is held out. ``iid``
workers read random windows of the training part; ``non_iid`` worker i only its slice.
The floor of real text is unknown (None).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.rng import rng as named_rng


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=axis)


class MarkovLanguage:
    """The synthetic language of a scenario's ``data`` section (kind: synthetic)."""

    def __init__(self, spec, seq_len: int, n_workers: int, seed: int):
        self.spec = spec
        self.seq_len = seq_len
        self.n_workers = n_workers
        self.vocab_size = spec.vocab_size
        self.n_topics = spec.topics
        self.n_symbols = spec.vocab_size - spec.topics
        self.order = spec.order
        v, k, b = self.n_symbols, self.order, spec.branching
        self.n_ctx = v ** k
        g = named_rng(seed, "data/language")
        # shared sparse support: b distinct successors per context
        keys = g.random((self.n_ctx, v))
        self.succ = np.argsort(keys, axis=1)[:, :b].astype(np.int64)
        base = g.dirichlet(np.full(b, spec.concentration), size=self.n_ctx)
        probs = []
        for _ in range(self.n_topics):
            own = g.dirichlet(np.full(b, spec.concentration), size=self.n_ctx)
            p = (1 - spec.topic_spread) * base + spec.topic_spread * own
            probs.append(p / p.sum(axis=1, keepdims=True))
        self.probs = np.stack(probs)  # [topics, ctx, b]
        self.cum = np.cumsum(self.probs, axis=-1)
        self.cum[..., -1] = 1.0
        self.stationary = np.stack([self._stationary(self.probs[j]) for j in range(self.n_topics)])
        self.stationary_cum = np.cumsum(self.stationary, axis=-1)
        self.stationary_cum[:, -1] = 1.0
        self.position_entropy = np.stack([self._position_entropy(j) for j in range(self.n_topics)])
        self.loss_floor = float(self.position_entropy.mean())
        self.entropy_rate = float(np.mean([self._entropy_rate(j) for j in range(self.n_topics)]))

    # ------------------------------------------------------------------ exact quantities
    def _next_ctx(self, ctx: np.ndarray, sym: np.ndarray) -> np.ndarray:
        return (ctx * self.n_symbols) % self.n_ctx + sym

    def _stationary(self, p: np.ndarray) -> np.ndarray:
        """Stationary distribution by lazy power iteration (converges for any chain)."""
        src = np.repeat(np.arange(self.n_ctx), p.shape[1])
        dst = self._next_ctx(src, self.succ.reshape(-1))
        w = p.reshape(-1)
        pi = np.full(self.n_ctx, 1.0 / self.n_ctx)
        for _ in range(200_000):
            nxt = 0.5 * pi + 0.5 * np.bincount(dst, weights=pi[src] * w, minlength=self.n_ctx)
            if np.abs(nxt - pi).sum() < 1e-14:
                return nxt / nxt.sum()
            pi = nxt
        raise RuntimeError("stationary distribution did not converge")

    def _entropy_rate(self, topic: int) -> float:
        return float((self.stationary[topic] * _entropy(self.probs[topic])).sum())

    def _position_entropy(self, topic: int) -> np.ndarray:
        """Best achievable cross-entropy at each of the seq_len predicted positions."""
        v, k = self.n_symbols, self.order
        pi = self.stationary[topic].reshape((v,) * k)  # axes: oldest .. newest symbol
        out = np.empty(self.seq_len)
        prev = 0.0
        for t in range(1, self.seq_len + 1):
            if t <= k:
                marg = pi.sum(axis=tuple(range(t, k))) if t < k else pi
                joint = float(_entropy(marg.reshape(-1)))
                out[t - 1] = joint - prev
                prev = joint
            else:
                out[t - 1] = self._entropy_rate(topic)
        return out

    # ------------------------------------------------------------------ sampling
    def topic_weights(self, worker: int | None) -> np.ndarray:
        k = self.n_topics
        if worker is None or self.spec.shards == "iid" or k == 1:
            return np.full(k, 1.0 / k)
        own = worker % k
        w = np.full(k, (1.0 - self.spec.skew) / (k - 1))
        w[own] = self.spec.skew
        return w

    def sample(self, g: np.random.Generator, batch_size: int, topic_weights: np.ndarray) -> np.ndarray:
        """Token sequences of length seq_len + 1, shape [batch_size, seq_len + 1], int64."""
        n, k, v = batch_size, self.order, self.n_symbols
        length = self.seq_len + 1
        topics = g.choice(self.n_topics, size=n, p=topic_weights)
        out = np.empty((n, length), dtype=np.int64)
        out[:, 0] = topics
        u = g.random(n)
        ctx = np.empty(n, dtype=np.int64)
        for j in range(self.n_topics):
            sel = topics == j
            ctx[sel] = np.searchsorted(self.stationary_cum[j], u[sel], side="right")
        ctx = np.minimum(ctx, self.n_ctx - 1)
        digits = [(ctx // v ** (k - 1 - i)) % v for i in range(k)]
        for i in range(min(k, length - 1)):
            out[:, 1 + i] = digits[i] + self.n_topics
        for t in range(k + 1, length):
            u = g.random(n)
            choice = (u[:, None] > self.cum[topics, ctx]).sum(axis=1)
            sym = self.succ[ctx, choice]
            out[:, t] = sym + self.n_topics
            ctx = self._next_ctx(ctx, sym)
        return out

    def train_batch(self, g: np.random.Generator, worker: int, batch_size: int) -> np.ndarray:
        return self.sample(g, batch_size, self.topic_weights(worker))

    def eval_batch(self, g: np.random.Generator, batch_size: int) -> np.ndarray:
        return self.sample(g, batch_size, self.topic_weights(None))

    def true_log_probs(self, seqs: np.ndarray) -> np.ndarray:
        """Exact log p(x_t | x_<t) of each predicted token, shape [n, seq_len] (for tests)."""
        n, length = seqs.shape
        k, v = self.order, self.n_symbols
        topics = seqs[:, 0]
        out = np.empty((n, length - 1))
        syms = seqs[:, 1:] - self.n_topics
        for i in range(n):
            pi = self.stationary[topics[i]].reshape((v,) * k)
            for t in range(1, length):
                if t <= k:
                    marg = pi.sum(axis=tuple(range(t, k))) if t < k else pi
                    prefix = tuple(syms[i, : t - 1])
                    cond = marg[prefix] / marg[prefix].sum()
                    out[i, t - 1] = np.log(cond[syms[i, t - 1]])
                else:
                    ctx = 0
                    for s in syms[i, t - 1 - k: t - 1]:
                        ctx = ctx * v + s
                    row = self.succ[ctx]
                    j = np.nonzero(row == syms[i, t - 1])[0]
                    out[i, t - 1] = np.log(self.probs[topics[i], ctx, j[0]]) if len(j) else -np.inf
        return out


def read_text_data(spec, seq_len: int, n_workers: int) -> tuple[str, list[str]]:
    """The text of a ``kind: text`` data section and its sorted characters; ValueError (one
    line, naming data.path) when the file cannot be read as UTF-8, is empty, has fewer than 2
    distinct characters or is too short for seq_len and the shards. Run before anything is
    built (``sim.checks``) and again by ``CharText``."""
    p = Path(spec.path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"data.path: {str(p)!r} is not UTF-8 text (byte {err.start} cannot be decoded)") from None
    except OSError as err:
        raise ValueError(f"data.path: cannot read {str(p)!r} ({type(err).__name__})") from None
    if not text:
        raise ValueError(f"data.path: {str(p)!r} is empty")
    chars = sorted(set(text))
    if len(chars) < 2:
        raise ValueError(f"data.path: needs at least 2 distinct characters (file has {len(chars)})")
    n_eval = max(int(len(text) * spec.eval_fraction), seq_len + 1)
    need = (seq_len + 1) * (n_workers if spec.shards == "non_iid" else 1)
    if len(text) - n_eval < need or n_eval < seq_len + 1:
        raise ValueError(f"data.path: file too short for seq_len={seq_len} and {n_workers} shards "
                         f"({len(text)} characters)")
    return text, chars


class CharText:
    """Character-level text from a local file (kind: text)."""

    def __init__(self, spec, seq_len: int, n_workers: int, seed: int):
        text, chars = read_text_data(spec, seq_len, n_workers)
        self.vocab_size = len(chars)
        self.chars = chars
        lut = {c: i for i, c in enumerate(chars)}
        tokens = np.array([lut[c] for c in text], dtype=np.int64)
        n_eval = max(int(len(tokens) * spec.eval_fraction), seq_len + 1)
        self.train = tokens[:-n_eval]
        self.eval = tokens[-n_eval:]
        self.seq_len = seq_len
        self.n_workers = n_workers
        self.shards = spec.shards
        need = (seq_len + 1) * (n_workers if spec.shards == "non_iid" else 1)
        if len(self.train) < need or len(self.eval) < seq_len + 1:
            raise ValueError(f"data.path: file too short for seq_len={seq_len} and {n_workers} shards "
                             f"({len(tokens)} characters)")
        self.loss_floor = None

    def _windows(self, g: np.random.Generator, tokens: np.ndarray, batch_size: int) -> np.ndarray:
        starts = g.integers(0, len(tokens) - self.seq_len, size=batch_size)
        return tokens[starts[:, None] + np.arange(self.seq_len + 1)]

    def train_batch(self, g: np.random.Generator, worker: int, batch_size: int) -> np.ndarray:
        tokens = self.train
        if self.shards == "non_iid":
            size = len(tokens) // self.n_workers
            tokens = tokens[worker * size:(worker + 1) * size]
        return self._windows(g, tokens, batch_size)

    def eval_batch(self, g: np.random.Generator, batch_size: int) -> np.ndarray:
        return self._windows(g, self.eval, batch_size)


def _plugin_data(spec, seq_len: int, n_workers: int, seed: int):
    """A user's data (``data.plugin``): ``Name(seq_len=, n_workers=, seed=, **args)``, checked
    for the methods the numerics call."""
    from sim.loader import PluginError, load_object

    make = load_object(spec.plugin, "data.plugin")
    try:
        data = make(seq_len=seq_len, n_workers=n_workers, seed=seed, **spec.args)
    except Exception as err:
        raise PluginError(f"data.args: {getattr(make, '__name__', make)}(seq_len=, n_workers=, seed=, **args) "
                          f"failed: {type(err).__name__}: {err}") from None
    missing = [a for a in ("vocab_size", "train_batch", "eval_batch") if not hasattr(data, a)]
    if missing:
        raise PluginError(f"data.plugin: the object it returned lacks {', '.join(missing)}")
    if not hasattr(data, "loss_floor"):
        data.loss_floor = None
    return data


DATASETS = {"synthetic": MarkovLanguage, "text": CharText, "plugin": _plugin_data}


def make_dataset(spec, seq_len: int, n_workers: int, seed: int):
    if spec.kind not in DATASETS:
        raise ValueError(f"unknown data kind '{spec.kind}'; known: {', '.join(DATASETS)}")
    return DATASETS[spec.kind](spec, seq_len, n_workers, seed)
