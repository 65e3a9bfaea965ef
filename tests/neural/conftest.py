"""A tiny task-token network shared by the tests of ``tilt.neural`` (one layer, width 16, grid3)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tilt.context import make_context  # noqa: E402
from tilt.graphs import named_task  # noqa: E402
from tilt.neural import (  # noqa: E402
    NetworkTask,
    PretrainOptions,
    TaskTokens,
    build_gpt2,
    network_tables,
    pretrain,
    save_network,
)
from tilt.policy import base_policy  # noqa: E402
from tilt.space import enumerate_rollouts  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def space():
    return enumerate_rollouts(named_task("grid3"))


@pytest.fixture(scope="session")
def tiny(space):
    """A one-layer, width-16 GPT-2 pretrained 100 steps on grid3 with edge(2) (about 1 s)."""
    model = build_gpt2(TaskTokens(space), n_layer=1, n_embd=16, n_head=2, seed=0)
    pretrain(
        model,
        base_policy(space),
        make_context("edge", 2.0),
        PretrainOptions(steps=100, batch=64, lr=1e-2),
        seed=0,
    )
    return model


@pytest.fixture(scope="session")
def tables32(tiny, space):
    return network_tables(tiny, space)


@pytest.fixture(scope="session")
def tiny64(tiny):
    import copy

    return copy.deepcopy(tiny).double()


@pytest.fixture(scope="session")
def tables64(tiny64, space):
    return network_tables(tiny64, space)


@pytest.fixture(scope="session")
def network_dir(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("net") / "grid3"
    save_network(folder, tiny, NetworkTask("grid3", context="edge", strength=2.0))
    return folder
