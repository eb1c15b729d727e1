r"""What contrastive pretraining changes in a representation, measured on pairs of views.

A contrastive loss asks for two things at once (Wang & Isola, "Understanding Contrastive Representation
Learning through Alignment and Uniformity on the Hypersphere", ICML 2020): the two views of one image should
map to nearby points (**alignment**), and the points of different images should spread over the unit sphere
(**uniformity**). For features normalised to unit length, with :math:`(x, y)` the two views of one image and
:math:`x, x'` two different images,

.. math::

    \mathcal{L}_\text{align} = \mathbb{E}\,\lVert f(x) - f(y) \rVert_2^{\alpha}, \qquad
    \mathcal{L}_\text{uniform} = \log \mathbb{E}\, e^{-t \lVert f(x) - f(x') \rVert_2^2},

both lower-is-better (:math:`\alpha = 2`, :math:`t = 2` as in the paper). A backbone that maps every image to
the same point is perfectly aligned and not uniform at all (:math:`\mathcal{L}_\text{uniform} = 0`); points
spread evenly over a high-dimensional sphere are nearly orthogonal, which gives about :math:`-2t = -4`. The same two ideas,
read as cosine similarities, are the positive and negative pairs of NT-Xent (:func:`pair_similarities`), and
:func:`contrastive_probabilities` is the distribution over candidates that NT-Xent's cross entropy is taken over.

Notebook 02 uses these to compare the random initialisation with the pretrained backbone on the same views of
the same validation images (:func:`view_features`, :func:`representation_table`).
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from mammo_utils.models import normalize
from mammo_utils.pretrain.views import views
from mammo_utils.sections import ViewsConfig


def alignment(z0: torch.Tensor, z1: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    r"""Mean distance between the two views of each image, on the unit sphere (Wang & Isola 2020, Eq. 4).

    Args:
        z0, z1: (N, D) features of the first and second views; row i of both is image i. They are normalised
            to unit length here.
        alpha: exponent of the distance (the paper's default, 2, makes it :math:`2 - 2\cos`).

    Returns:
        A scalar tensor in [0, 2^alpha]; 0 when every pair of views maps to one point. Lower is better aligned.
    """
    z0, z1 = F.normalize(z0.float(), dim=1), F.normalize(z1.float(), dim=1)
    return (z0 - z1).norm(p=2, dim=1).pow(alpha).mean()


def uniformity(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    r"""Log of the mean Gaussian potential between every two different images (Wang & Isola 2020, Eq. 5).

    Args:
        z: (N, D) features of N >= 2 different images (one view each), normalised to unit length here.
        t: the potential's scale (the paper's default is 2).

    Returns:
        A scalar tensor in [-4t, 0]: 0 when all the points coincide (collapse), more negative the more evenly
        they cover the sphere (about -2t, so -4 at t = 2, for many points spread over a high-dimensional sphere,
        where two points are nearly orthogonal: squared distance 2).
    """
    z = F.normalize(z.float(), dim=1)
    return torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log()


def pair_similarities(z0: torch.Tensor, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of the positive pairs and of the negative pairs of a batch of view pairs.

    Args:
        z0, z1: (N, D) features of the first and second views; row i of both is image i.

    Returns:
        ``(positive, negative)``: the N similarities of view 1 of image i with view 2 of image i, and the
        N (N - 1) similarities of view 1 of image i with view 2 of image j != i.
    """
    z0, z1 = F.normalize(z0.float(), dim=1), F.normalize(z1.float(), dim=1)
    sim = z0 @ z1.T
    same = torch.eye(len(z0), dtype=torch.bool, device=sim.device)
    return sim[same], sim[~same]


def contrastive_probabilities(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""The softmax over candidates that NT-Xent's cross entropy is taken over (SimCLR, Chen et al. 2020).

    Row i of the (2N, 2N) result is :math:`p_{ik} = \exp(s_{ik}/\tau) / \sum_{k' \ne i} \exp(s_{ik'}/\tau)`
    over the 2N views of the batch (views 1 of the N images first, then views 2), with :math:`s` the cosine
    similarity and the diagonal (a view with itself) set to 0. The positive of row i is column
    ``(i + N) % 2N``; NT-Xent is the mean of :math:`-\log p_{i,\text{positive}}` over the 2N rows.

    Args:
        z0, z1: (N, D) projections of the first and second views.
        temperature: :math:`\tau` > 0.

    Returns:
        A (2N, 2N) tensor whose rows sum to 1.
    """
    z = F.normalize(torch.cat([z0, z1]).float(), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    return logits.softmax(dim=1)


def two_views(regions: torch.Tensor, size_px: int, cfg: ViewsConfig, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Two random views of each region, the same for a given seed (so two backbones can be compared on them).

    Args:
        regions: (N, 1, R, R) regions in [0, 1]. size_px: side of a view. cfg: the views' settings.
        seed: seeds the views.

    Returns:
        ``(x0, x1)``: two (N, 1, size_px, size_px) tensors, the first and second view of each region.
    """
    g = torch.Generator().manual_seed(seed)
    return views(regions.float(), size_px, cfg, g), views(regions.float(), size_px, cfg, g)


@torch.no_grad()
def embed(backbone: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Backbone features (N, D) of (N, 1, S, S) images in [0, 1], in eval mode (the mode is restored)."""
    was = backbone.training
    backbone.eval()
    out = torch.cat([backbone(normalize(images[i : i + batch_size].float())).float()
                     for i in range(0, len(images), batch_size)])
    backbone.train(was)
    return out


def view_features(backbone: torch.nn.Module, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A backbone's features of the first and second views (eval mode, no gradient): ``(f0, f1)``, (N, D) each."""
    return embed(backbone, x0), embed(backbone, x1)


def nearest_crops(backbone: torch.nn.Module, queries: torch.Tensor, bank: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The indices (Q, k) of each query crop's ``k`` most similar bank crops (cosine of backbone features): what a
    network "thinks" looks alike."""
    q = F.normalize(embed(backbone, queries), dim=1)
    b = F.normalize(embed(backbone, bank), dim=1)
    return (q @ b.T).topk(k, dim=1).indices


def representation_table(features: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> pd.DataFrame:
    """Alignment, uniformity and the positive / negative pair similarities of each backbone's view features.

    Args:
        features: name -> ``(f0, f1)``, the (N, D) features of the same first and second views of N images
            under each backbone (:func:`view_features`), e.g. a random-init and a pretrained backbone.

    Returns:
        One row per name: ``alignment`` and ``uniformity`` (both lower is better; uniformity of the first views),
        ``positive_cos`` and ``negative_cos`` (the means of :func:`pair_similarities`), and ``gap`` (their
        difference: how much closer a film's two views are than two different films).
    """
    rows = []
    for name, (f0, f1) in features.items():
        positive, negative = pair_similarities(f0, f1)
        rows.append({"backbone": name, "alignment": float(alignment(f0, f1)), "uniformity": float(uniformity(f0)),
                     "positive_cos": float(positive.mean()), "negative_cos": float(negative.mean()),
                     "gap": float(positive.mean() - negative.mean())})
    return pd.DataFrame(rows).set_index("backbone")
