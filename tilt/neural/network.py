"""A causal LM as a policy on a task: build it, save it, load it, with its task description.

A network directory is a ``transformers`` model directory (``config.json`` and the
weights) plus ``tilt_task.json``: the task (graph, source, target, horizon),
the tokenisation and, for a pretrained network, the context model it was
taught.  Nothing is downloaded: a model is built from a config or loaded with
``local_files_only=True``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tilt.neural.tokens import BOS, EOS, TaskTokens
from tilt.space import DEFAULT_MAX_ROLLOUTS, RolloutSpace, enumerate_rollouts
from tilt.tasks.graphs import resolve_task

__all__ = [
    "TASK_FILE",
    "TASK_FORMAT",
    "NetworkTask",
    "task_space",
    "build_gpt2",
    "save_network",
    "load_network",
    "read_task",
    "seed_everything",
]

TASK_FILE = "tilt_task.json"
"""The task description next to the model's files."""

TASK_FORMAT = "tilt-neural/1"


@dataclass(frozen=True)
class NetworkTask:
    """What a network directory is a policy of.

    Attributes
    ----------
    graph : str
        A named graph or a graph file (:func:`tilt.tasks.graphs.resolve_task`).
    source, target : str or None
        Node labels (``None``: the graph's).
    horizon : int or None
    directed : bool
    context : str or None
        The context model the network was pretrained to follow (``edge``...), if any.
    strength : float or None
    base : str
        The tilt base the network was pretrained on.
    """

    graph: str
    source: str | None = None
    target: str | None = None
    horizon: int | None = None
    directed: bool = False
    context: str | None = None
    strength: float | None = None
    base: str = "default"

    def to_json(self) -> str:
        """The description as ``tilt_task.json`` holds it."""
        return json.dumps({"format": TASK_FORMAT, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "tilt_task.json") -> NetworkTask:
        """Parse :meth:`to_json`'s output; ``ValueError`` naming ``where`` otherwise."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} is not JSON: {exc.msg}") from None
        if not isinstance(data, dict) or data.pop("format", None) != TASK_FORMAT:
            raise ValueError(f"{where} is not a tilt network task ({TASK_FORMAT})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"{where}: {exc}") from None


def task_space(task: NetworkTask, max_rollouts: int = DEFAULT_MAX_ROLLOUTS) -> RolloutSpace:
    """Enumerate the rollout space a network directory describes."""
    resolved = resolve_task(task.graph, task.source, task.target, task.horizon, task.directed)
    return enumerate_rollouts(resolved, max_rollouts)


def seed_everything(seed: int) -> None:
    """``torch.manual_seed`` and deterministic algorithms (where CPU torch has them)."""
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def build_gpt2(
    tokens: TaskTokens,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    seed: int = 0,
) -> Any:
    """A fresh ``GPT2LMHeadModel`` sized for the task (no download), float32, eval mode.

    Raises
    ------
    ValueError
        If ``n_embd`` is not a multiple of ``n_head`` or a size is not positive.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    for name, value in (("n_layer", n_layer), ("n_embd", n_embd), ("n_head", n_head)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    config = GPT2Config(
        vocab_size=tokens.vocab_size,
        n_positions=tokens.max_length,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=BOS,
        eos_token_id=EOS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    seed_everything(seed)
    model: Any = GPT2LMHeadModel(config)
    model.eval()
    return model


def save_network(folder: str | os.PathLike[str], model: Any, task: NetworkTask) -> None:
    """Write ``model`` (``save_pretrained``) and ``tilt_task.json`` into ``folder``."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging

    hf_logging: Any = logging  # untyped module functions
    hf_logging.disable_progress_bar()  # a library call prints nothing on stderr
    model.save_pretrained(path)
    (path / TASK_FILE).write_text(task.to_json())


def read_task(folder: str | os.PathLike[str]) -> NetworkTask:
    """The :class:`NetworkTask` of a network directory.

    Raises
    ------
    ValueError
        If the folder or its ``tilt_task.json`` does not exist or is not valid.
    """
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"model directory {str(folder)!r} does not exist")
    file = path / TASK_FILE
    if not file.is_file():
        raise ValueError(
            f"{str(folder)!r} has no {TASK_FILE}: it is not a network saved by tilt.neural"
        )
    return NetworkTask.from_json(file.read_text(), str(file))


def load_network(
    folder: str | os.PathLike[str], dtype: str = "float32", max_rollouts: int = DEFAULT_MAX_ROLLOUTS
) -> tuple[Any, NetworkTask, RolloutSpace]:
    """Load a network directory: ``(model in eval mode, task, rollout space)``.

    Raises
    ------
    ValueError
        If the folder is missing or not a tilt network, ``dtype`` is not
        ``float32``/``float64``, or the model's vocabulary or context is too
        small for the task.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = _torch_dtype(dtype)
    task = read_task(folder)
    space = task_space(task, max_rollouts)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    model = model.to(torch_dtype)
    model.eval()
    tokens = TaskTokens(space)
    tokens.check_vocabulary(int(model.config.vocab_size))
    positions = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    if positions is not None:
        tokens.check_positions(int(positions))
    return model, task, space


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype == "float32":
        return torch.float32
    if dtype == "float64":
        return torch.float64
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


def as_numpy(values: Any) -> np.ndarray:
    """A torch tensor as a float64 numpy array (detached)."""
    return np.asarray(values.detach().to("cpu").double().numpy(), dtype=np.float64)
