"""TrainableDelta: the frozen model is the edit switched off, reached by an O(1) storage exchange, masked or not."""
import pytest
import torch

from unlearnkit.core.edits import TrainableDelta, training_in_place


def _module():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))


@pytest.mark.parametrize("masked", [False, True])
def test_masked_training_changes_only_masked_entries_and_frozen_is_the_original(masked):
    module = _module()
    names = ["0.weight", "1.weight"]
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    masks = {n: torch.rand_like(dict(module.named_parameters())[n]) > 0.5 for n in names} if masked else None
    with training_in_place(module, names, masks) as delta:
        opt = torch.optim.Adam(list(delta.params.values()), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            module(torch.randn(4, 6)).square().sum().backward()
            delta.mask_gradients()
            opt.step()
        trained = {n: p.detach().clone() for n, p in delta.params.items()}
        storage = {n: p.data_ptr() for n, p in delta.params.items()}
        with delta.frozen():
            for n, p in delta.params.items():
                assert torch.equal(p, before[n])                   # the original model, bit for bit
                assert p.data_ptr() != storage[n]                  # reached by exchanging storages, not copying
        for n, p in delta.params.items():
            assert torch.equal(p, trained[n]) and p.data_ptr() == storage[n]
            if masked:   # Adam on masked gradients never moves an entry outside the mask
                assert torch.equal(p[~masks[n]], before[n][~masks[n]])
                assert not torch.equal(p[masks[n]], before[n][masks[n]])
        edit = delta.to_edit()
        for n in names:
            assert torch.allclose(before[n] + edit.deltas[n], trained[n])
            if masked:
                assert not edit.deltas[n][~masks[n]].any()
    for n, p in module.named_parameters():   # afterwards the module is back to the original
        assert torch.equal(p, before[n])


def test_to_edit_inside_frozen_is_refused():
    module = _module()
    delta = TrainableDelta(module, ["0.weight"])
    with delta.frozen(), pytest.raises(RuntimeError, match="frozen"):
        delta.to_edit()
