"""What is trained: the ``model:`` section (the tiny GPT, an MLP, or a user's plug-in model),
the ``data:`` section (the synthetic language, a text file, or a user's plug-in data) and the
inner ``optimizer:`` every worker runs.

These sections say what the numbers are (``sim/training``); none of them affects virtual time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from sim.algorithms.knobs import FieldError, Int, PositiveFloat
from sim.scenario.base import StrictModel

# Bounds that keep a scenario inside what one process can simulate: beyond it the data tables
# would exhaust memory before a check could run.
MAX_MARKOV_TABLE = 20_000_000  # (vocab_size - topics) ** (order + 1): 16 bytes each while the language is built


# --------------------------------------------------------------------------- model
class GPTModel(StrictModel):
    kind: Literal["gpt"] = "gpt"
    vocab_size: Int | None = Field(default=None, ge=2, description="Vocabulary size; default: taken from the data.")
    d_model: Int = Field(default=64, ge=4, le=65_536, description="Embedding width.")
    n_layers: Int = Field(default=2, ge=1, le=1024, description="Transformer blocks (L).")
    n_heads: Int = Field(default=4, ge=1, description="Attention heads; must divide d_model.")
    seq_len: Int = Field(default=64, ge=2, le=1_048_576, description="Context length in tokens.")
    mlp_ratio: Int = Field(default=4, ge=1, le=64, description="MLP hidden width = mlp_ratio x d_model.")

    @model_validator(mode="after")
    def _heads(self) -> "GPTModel":
        if self.d_model % self.n_heads:
            raise FieldError(("n_heads",), f"must divide d_model={self.d_model} (got {self.n_heads})")
        return self


class MLPModel(StrictModel):
    kind: Literal["mlp"] = "mlp"
    vocab_size: Int | None = Field(default=None, ge=2, description="Vocabulary size; default: taken from the data.")
    d_model: Int = Field(default=32, ge=2, le=65_536, description="Embedding width per context token.")
    hidden: Int = Field(default=128, ge=1, le=1_048_576, description="Hidden width.")
    context: Int = Field(default=3, ge=1, le=4096, description="Previous tokens the MLP sees.")
    seq_len: Int = Field(default=32, ge=2, le=1_048_576, description="Tokens per training sequence.")


PLUGIN_REF_DOC = "FILE.py:Name (relative to the scenario file) or package.module:Name"


class PluginModel(StrictModel):
    """A user's model: any ``torch.nn.Module`` whose forward maps tokens [batch, seq_len] to
    logits [batch, seq_len, vocab_size] (``output: logits``) or inputs and targets to its own
    loss (``output: loss``), built as ``Name(vocab_size=V, **args)``; trained on the vmap
    engine. Blocks named ``blocks.<i>.`` are the layers of per-layer timing."""
    kind: Literal["plugin"] = "plugin"
    plugin: str = Field(min_length=1, description=f"The model class: {PLUGIN_REF_DOC}.")
    args: dict[str, Any] = Field(default_factory=dict, description=(
        "Keyword arguments of the constructor (plain YAML values); one it annotates pathlib.Path is a path "
        "relative to the scenario file (sim/paths.py)."))
    output: Literal["logits", "loss"] = Field(default="logits", description=(
        "What forward returns: logits = forward(tokens) gives [batch, seq_len, vocab] and locosim takes the "
        "next-token cross-entropy; loss = forward(tokens, targets) gives the model's own loss, one number "
        "(the mean over the batch), trained and evaluated as it is."))
    vocab_size: Int | None = Field(default=None, ge=2, description="Vocabulary size; default: taken from the data.")
    seq_len: Int = Field(default=32, ge=2, le=1_048_576, description="Tokens per training sequence.")


ModelSpec = Annotated[Union[GPTModel, MLPModel, PluginModel], Field(discriminator="kind")]


# --------------------------------------------------------------------------- data
class SyntheticData(StrictModel):
    kind: Literal["synthetic"] = "synthetic"
    vocab_size: Int = Field(default=32, ge=3, description="Total tokens, including one topic marker per topic.")
    order: Int = Field(default=2, ge=1, le=4, description="Markov order k: the next token depends on the last k.")
    branching: Int = Field(default=3, ge=1, description="Possible next tokens per context (sparsity).")
    concentration: PositiveFloat = Field(default=1.0, description="Dirichlet concentration of transition probabilities.")
    topics: Int = Field(default=1, ge=1, description="Number of topic sources (Markov chains on one support).")
    topic_spread: float = Field(default=0.5, ge=0, le=1, description=(
        "How different topics are: 0 = identical chains, 1 = independent probabilities on the shared support."))
    shards: Literal["iid", "non_iid"] = Field(default="iid", description="iid: every worker samples topics uniformly; non_iid: worker i mostly sees topic i mod topics.")
    skew: float = Field(default=0.9, ge=0, le=1, description="non_iid: fraction of a worker's sequences from its own topic.")

    @model_validator(mode="after")
    def _fits(self) -> "SyntheticData":
        if self.vocab_size - self.topics < 2:
            raise FieldError(("vocab_size",), f"must exceed topics by at least 2 (got vocab_size={self.vocab_size}, topics={self.topics})")
        if self.branching > self.vocab_size - self.topics:
            raise FieldError(("branching",), f"must be <= vocab_size - topics = {self.vocab_size - self.topics} (got {self.branching})")
        if (self.vocab_size - self.topics) ** self.order > 2_000_000:
            # blame what makes it large: a vocabulary that alone has too many contexts, else the order
            field_ = "vocab_size" if self.order == 1 or self.vocab_size - self.topics > 2_000_000 else "order"
            raise FieldError((field_,), f"(vocab_size - topics) ** order must be <= 2,000,000 contexts (got "
                                         f"({self.vocab_size} - {self.topics}) ** {self.order})")
        table = (self.vocab_size - self.topics) ** (self.order + 1)
        if table > MAX_MARKOV_TABLE:  # refused before the language's tables are allocated
            raise FieldError(("vocab_size",), f"the synthetic language needs (vocab_size - topics) ** (order + 1) "
                                               f"= {table:,} table entries (about {16 * table / 2**30:.3g} GiB to "
                                               f"build); at most {MAX_MARKOV_TABLE:,}: lower vocab_size or order")
        return self


class TextData(StrictModel):
    kind: Literal["text"] = "text"
    path: str = Field(description="Local UTF-8 text file, trained on character by character (relative to the scenario file).")
    eval_fraction: float = Field(default=0.1, gt=0, lt=0.5, description="Tail fraction of the file held out for eval.")
    shards: Literal["iid", "non_iid"] = Field(default="iid", description="iid: random windows anywhere; non_iid: worker i reads only its contiguous slice.")


class PluginData(StrictModel):
    """A user's data: ``Name(seq_len=T, n_workers=M, seed=S, **args)`` (a class or a function)
    returns an object with ``vocab_size``, ``train_batch(g, worker, batch_size)`` and
    ``eval_batch(g, batch_size)`` (int64 arrays [batch_size, seq_len + 1] drawn with the numpy
    generator ``g``, a named stream, so runs stay reproducible) and optionally ``loss_floor``."""
    kind: Literal["plugin"] = "plugin"
    plugin: str = Field(min_length=1, description=f"The data's class or function: {PLUGIN_REF_DOC}.")
    args: dict[str, Any] = Field(default_factory=dict, description=(
        "Keyword arguments (plain YAML values); one the plug-in annotates pathlib.Path is a path relative to the "
        "scenario file (sim/paths.py)."))


DataSpec = Annotated[Union[SyntheticData, TextData, PluginData], Field(discriminator="kind")]


# --------------------------------------------------------------------------- optimizer
class InnerOptimizer(StrictModel):
    name: Literal["adamw", "sgd"] = Field(default="adamw", description="Inner optimizer (each replica keeps its own state).")
    lr: PositiveFloat = Field(default=3e-3, description="Inner learning rate.")
    weight_decay: float = Field(default=0.0, ge=0, description="Decoupled weight decay (AdamW).")
    beta1: float = Field(default=0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(default=0.95, ge=0, lt=1, description="AdamW beta2.")
    eps: PositiveFloat = Field(default=1e-8, description="AdamW epsilon.")
    grad_clip: float | None = Field(default=1.0, gt=0, description="Clip each replica's gradient to this global norm; null = off.")
    warmup_steps: Int = Field(default=0, ge=0, description="Linear learning-rate warmup over this many inner steps (per replica).")
    schedule: Literal["constant", "cosine"] = Field(default="constant", description="After warmup: constant, or cosine decay over decay_steps to min_lr_ratio * lr.")
    decay_steps: Int | None = Field(default=None, ge=1, description="Inner steps of cosine decay after warmup (required for schedule: cosine).")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="Final learning rate of the cosine schedule, as a fraction of lr.")

    @model_validator(mode="after")
    def _decay(self) -> "InnerOptimizer":
        if self.schedule == "cosine" and self.decay_steps is None:
            raise FieldError(("decay_steps",), "required when schedule is cosine (inner steps of decay after warmup)")
        return self

