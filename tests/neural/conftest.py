"""A tiny task-token network shared by the tests of ``tilt.neural`` (one layer, width 16, grid3)."""

from __future__ import annotations

import pytest

try:  # without the neural extra every test module here skips itself (pytest.importorskip)
    import torch
    import transformers  # noqa: F401
except ImportError:
    torch = None


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def space():
    from tilt.space import enumerate_rollouts
    from tilt.tasks.graphs import named_task

    return enumerate_rollouts(named_task("grid3"))


@pytest.fixture(scope="session")
def tiny(space):
    """A one-layer, width-16 GPT-2 pretrained 100 steps on grid3 with edge(2) (about 1 s)."""
    from tilt.context import make_context
    from tilt.neural import PretrainOptions, TaskTokens, build_gpt2, pretrain
    from tilt.policy import base_policy

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
    from tilt.neural import network_tables

    return network_tables(tiny, space)


@pytest.fixture(scope="session")
def tiny64(tiny):
    import copy

    return copy.deepcopy(tiny).double()


@pytest.fixture(scope="session")
def tables64(tiny64, space):
    from tilt.neural import network_tables

    return network_tables(tiny64, space)


@pytest.fixture(scope="session")
def network_dir(tiny, tmp_path_factory):
    from tilt.neural import NetworkTask, save_network

    folder = tmp_path_factory.mktemp("net") / "grid3"
    save_network(folder, tiny, NetworkTask("grid3", context="edge", strength=2.0))
    return folder
