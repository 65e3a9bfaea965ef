"""A causal language model over a task's tokens as tilt's model (optional extra ``neural``).

The package's one responsibility: turn a network into tilt's objects -- its
base as a :class:`~tilt.policy.Policy` and its in-context teacher as a
:class:`~tilt.context.ContextModel`, read off exactly by teacher forcing on
the enumerated rollout space -- and check tilt's predictions against the
network after real training.  It needs ``torch`` and ``transformers``
(``pip install 'tilt[neural]'``); the core of tilt never imports it.

Modules: :mod:`~tilt.neural.tokens` (the task as tokens),
:mod:`~tilt.neural.network` (build, save, load), :mod:`~tilt.neural.tables`
(exact tables), :mod:`~tilt.neural.model` (the context model),
:mod:`~tilt.neural.pretrain`, :mod:`~tilt.neural.train`,
:mod:`~tilt.neural.audit_log`; commands in ``python -m tilt.neural``.
"""

from tilt.neural.audit_log import AuditLogOptions, audit_jsonl, audit_records, sample_network
from tilt.neural.model import NetworkContext
from tilt.neural.network import (
    NetworkTask,
    build_gpt2,
    load_network,
    read_task,
    save_network,
    seed_everything,
    task_space,
)
from tilt.neural.pretrain import FitReport, PretrainOptions, fit_report, pretrain, rollout_prefixes
from tilt.neural.tables import (
    TABLE_LIMIT,
    NetworkTables,
    child_logits,
    masked_log_conditionals,
    network_tables,
    path_logits,
)
from tilt.neural.tokens import BOS, EOS, NODE_OFFSET, SEP, TaskTokens
from tilt.neural.train import (
    Checkpoint,
    NeuralTrainOptions,
    NeuralTrainResult,
    predicted_optimum,
    total_variation,
    train_network,
)

__all__ = [
    "BOS",
    "SEP",
    "EOS",
    "NODE_OFFSET",
    "TaskTokens",
    "NetworkTask",
    "build_gpt2",
    "save_network",
    "load_network",
    "read_task",
    "task_space",
    "seed_everything",
    "TABLE_LIMIT",
    "NetworkTables",
    "network_tables",
    "child_logits",
    "path_logits",
    "masked_log_conditionals",
    "NetworkContext",
    "PretrainOptions",
    "FitReport",
    "pretrain",
    "fit_report",
    "rollout_prefixes",
    "NeuralTrainOptions",
    "Checkpoint",
    "NeuralTrainResult",
    "train_network",
    "predicted_optimum",
    "total_variation",
    "AuditLogOptions",
    "audit_records",
    "audit_jsonl",
    "sample_network",
]
