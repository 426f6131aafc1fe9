"""2D ALiBi: the bias depends only on relative distance, and a model trained on small grids runs on larger ones.

The extrapolation task is spatial on purpose: a slide is "clustered" when its tumour patches form one blob and
"scattered" when the same number of tumour patches are spread at random. Patch contents are identical in
distribution, so only positions tell the classes apart: a bag-of-patches model stays at chance, a 2D-ALiBi model
trained on grids of at most 8 x 8 keeps its accuracy on 16-24 side grids (2-3x wider, up to 9x more patches), and a
learned absolute position table cannot even index the larger grids.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from slide_tiny import random_slide, tiny_encoder
from torch import nn

from reportkd.vlm.slide import alibi_2d_bias, alibi_slopes
from reportkd.vlm.slide.data import pad_slides

DIM = 16


def test_bias_is_minus_slope_times_euclidean_distance_and_translation_invariant():
    g = torch.tensor([[[0, 0], [3, 4], [1, 1]]])
    slopes = torch.tensor([0.5, 0.25])
    mask = torch.tensor([[True, True, False]])
    bias = alibi_2d_bias(g, slopes, mask, num_prefix_tokens=1)
    assert bias.shape == (1, 2, 4, 4)
    assert bias[0, 0, 1, 2] == pytest.approx(-0.5 * 5.0) and bias[0, 1, 2, 1] == pytest.approx(-0.25 * 5.0)
    assert (bias[0, :, 0, :3] == 0).all() and (bias[0, :, :, 0] == 0).all()  # CLS: no position
    assert torch.isinf(bias[..., 3]).all()  # masked key
    torch.testing.assert_close(alibi_2d_bias(g + torch.tensor([100, -7]), slopes, mask, num_prefix_tokens=1), bias)


def test_alibi_slopes_follow_the_geometric_sequence():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    six = alibi_slopes(6)
    assert len(six) == 6 and len(set(six.tolist())) == 6 and (six > 0).all() and (six < 1).all()


def test_outputs_invariant_to_translating_the_slide_on_the_grid():
    model = tiny_encoder().eval()
    f, g = random_slide(15)
    a, b = model(f, g), model(f, g + torch.tensor([37, 5]))
    torch.testing.assert_close(a.slide_embeds, b.slide_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.patch_embeds, b.patch_embeds, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Extrapolation
# ---------------------------------------------------------------------------------------------------------------
_rng = np.random.default_rng(123)
TUMOUR, NORMAL = _rng.normal(size=DIM), _rng.normal(size=DIM)


def spatial_slides(n, seed, lo, hi):
    """Label 1: tumour patches form one blob; label 0: as many tumour patches scattered at random."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = rng.integers(lo, hi + 1, 2)
        cells = np.argwhere(np.ones((h, w), dtype=bool))
        label, k = int(rng.integers(2)), max(2, int(0.25 * len(cells)))
        tumour = np.zeros(len(cells), dtype=bool)
        if label:
            centre = cells[rng.integers(len(cells))]
            tumour[np.argsort(((cells - centre) ** 2).sum(1) + 0.1 * rng.random(len(cells)))[:k]] = True
        else:
            tumour[rng.choice(len(cells), k, replace=False)] = True
        feats = np.where(tumour[:, None], TUMOUR, NORMAL) + 0.5 * rng.normal(size=(len(cells), DIM))
        out.append((torch.tensor(feats, dtype=torch.float32), torch.tensor(cells[:, ::-1].copy()), label))
    return out


def collate(slides):
    batch = pad_slides([s[0] for s in slides], [s[1] for s in slides])
    return batch, torch.tensor([s[2] for s in slides])


class AbsolutePositions(nn.Module):
    """Baseline: learned row / column tables of a fixed grid size added to the patch features."""

    def __init__(self, encoder, max_side=8):
        super().__init__()
        self.encoder, self.rows, self.cols = encoder, nn.Embedding(max_side, DIM), nn.Embedding(max_side, DIM)

    def forward(self, features, grid, patch_mask):
        pos = self.cols(grid[..., 0]) + self.rows(grid[..., 1])
        return self.encoder(features + pos, grid, patch_mask)


def fit(model, train, steps=120, lr=2e-3):
    torch.manual_seed(0)
    head = nn.Linear(32, 2)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch, y = collate([train[i] for i in torch.randint(len(train), (32,), generator=g)])
        loss = F.cross_entropy(head(model(**batch).slide_embeds), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


@torch.no_grad()
def accuracy(model, head, slides):
    model.eval()
    hits = []
    for i in range(0, len(slides), 16):
        batch, y = collate(slides[i : i + 16])
        hits.append(head(model(**batch).slide_embeds).argmax(-1) == y)
    return torch.cat(hits).float().mean().item()


def test_alibi_model_trained_on_small_grids_keeps_its_accuracy_on_larger_grids():
    train, small, large = spatial_slides(256, 0, 4, 8), spatial_slides(64, 1, 4, 8), spatial_slides(64, 2, 16, 24)
    assert max(len(s[0]) for s in large) >= 4 * max(len(s[0]) for s in train)
    kw = dict(input_dim=DIM, alibi_slopes=[2.0, 1.0, 0.5, 0.0], pooling="mean")  # local heads and a global one
    alibi = tiny_encoder(**kw)
    head = fit(alibi, train)
    acc_small, acc_large = accuracy(alibi, head, small), accuracy(alibi, head, large)
    assert acc_small >= 0.8 and acc_large >= 0.8, (acc_small, acc_large)

    bag = tiny_encoder(position_encoding="none", **kw)  # same model without positions: cannot solve the task
    assert accuracy(bag, fit(bag, train, steps=60), small) <= 0.7

    absolute = AbsolutePositions(tiny_encoder(position_encoding="none", **kw))
    head = fit(absolute, train, steps=20)
    accuracy(absolute, head, small)  # runs on the grid sizes it was built for
    with pytest.raises(IndexError):
        accuracy(absolute, head, large)
