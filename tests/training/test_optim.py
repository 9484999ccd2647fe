import copy

import pytest
import torch

from training.matching.optim import RowWiseAdagrad, load_optimizer_state, optimizer_state


def _table(weight_decay: float = 0.0) -> tuple[torch.nn.Embedding, RowWiseAdagrad]:
    emb = torch.nn.Embedding(4, 2, sparse=True)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]))
    return emb, RowWiseAdagrad([emb.weight], lr=0.5, weight_decay=weight_decay)


def test_a_step_matches_rowwise_adagrad_by_hand() -> None:
    emb, opt = _table()
    emb(torch.tensor([1])).sum().backward()  # grad of row 1 = [1, 1]
    opt.step()
    # accumulator = mean(g^2) = 1, step = -lr * g / sqrt(1)
    torch.testing.assert_close(emb.weight[1], torch.tensor([2.5, 3.5]))
    torch.testing.assert_close(emb.weight[0], torch.tensor([1.0, 2.0]))  # untouched


def test_weight_decay_pulls_only_touched_rows_toward_zero() -> None:
    emb, opt = _table(weight_decay=1.0)
    emb(torch.tensor([1])).mul(0.0).sum().backward()  # zero loss gradient: decay alone
    opt.step()
    # g = wd * w = [3, 4]; accumulator = (9 + 16) / 2 = 12.5; step = -0.5 * g / sqrt(12.5)
    expected = torch.tensor([3.0, 4.0]) * (1 - 0.5 / 12.5**0.5)
    torch.testing.assert_close(emb.weight[1], expected)
    torch.testing.assert_close(emb.weight[2], torch.tensor([5.0, 6.0]))


def test_dense_gradients_are_refused() -> None:
    weight = torch.nn.Parameter(torch.ones(3, 2))
    weight.sum().backward()
    with pytest.raises(ValueError, match="sparse gradients"):
        RowWiseAdagrad([weight]).step()


def test_a_row_seen_several_times_steps_once_on_its_summed_gradient() -> None:
    """Duplicate rows (an embedding bag's entries) are summed first: the same step as on
    the coalesced gradient, whatever order the rows came in."""
    emb, opt = _table()
    bag = torch.nn.functional.embedding_bag(
        torch.tensor([3, 1, 3, 3, 0]), emb.weight, torch.tensor([0, 2]), mode="sum", sparse=True
    )
    bag.sum().backward()  # row 3 three times: g = [3, 3]; rows 0 and 1 once: g = [1, 1]
    opt.step()
    torch.testing.assert_close(emb.weight[3], torch.tensor([7.0, 8.0]) - 0.5 * 3 / 3)
    torch.testing.assert_close(emb.weight[0], torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(emb.weight[1], torch.tensor([2.5, 3.5]))
    torch.testing.assert_close(emb.weight[2], torch.tensor([5.0, 6.0]))


def test_the_state_goes_by_parameter_name_and_a_misfit_is_refused() -> None:
    """A saved state restores each parameter's own (a second step equals an uninterrupted
    one); a table whose row count changed without a `carry` is an error, not a restart."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"table": torch.nn.Embedding(4, 2, sparse=True),
                                 "dense": torch.nn.Linear(2, 1)})  # fmt: skip

    def opts(m: torch.nn.ModuleDict) -> tuple[torch.optim.Optimizer, ...]:
        return (RowWiseAdagrad([m["table"].weight], lr=0.5),
                torch.optim.AdamW(m["dense"].parameters(), lr=0.1))  # fmt: skip

    def step(m: torch.nn.ModuleDict, optimisers: tuple[torch.optim.Optimizer, ...]) -> None:
        for o in optimisers:
            o.zero_grad()
        m["dense"](m["table"](torch.tensor([1, 2]))).sum().backward()
        for o in optimisers:
            o.step()

    first = opts(model)
    step(model, first)
    saved = optimizer_state(model, first)
    assert set(saved) == {"table.weight", "dense.weight", "dense.bias"}
    twin = copy.deepcopy(model)
    step(model, first)  # uninterrupted
    resumed = opts(twin)
    assert load_optimizer_state(twin, resumed, saved) == 3
    step(twin, resumed)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    grown = torch.nn.ModuleDict({"table": torch.nn.Embedding(5, 2, sparse=True),
                                 "dense": torch.nn.Linear(2, 1)})  # fmt: skip
    with pytest.raises(ValueError, match=r"table.weight.sum: shape \(4,\), not \(5,\)"):
        load_optimizer_state(grown, opts(grown), saved)
