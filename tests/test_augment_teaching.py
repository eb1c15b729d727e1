import torch

from mammo_utils.augment import simclr_views
from mammo_utils.config import AugmentConfig
from mammo_utils.teaching import check_nt_xent, nt_xent_reference


def test_two_different_views_of_the_right_size_and_range():
    torch.manual_seed(0)
    x = torch.rand(1, 80, 80)
    v1, v2 = simclr_views(32, AugmentConfig())(x)
    assert v1.shape == v2.shape == (1, 32, 32)
    assert not torch.equal(v1, v2)
    assert v1.min() >= 0 and v1.max() <= 1


def test_reference_nt_xent_matches_lightly_and_the_check_catches_mistakes(capsys):
    assert check_nt_xent(nt_xent_reference)
    assert not check_nt_xent(lambda a, b, t: nt_xent_reference(a, b, t * 1.1))
    assert "FAIL" in capsys.readouterr().out

    def unfinished(a, b, t):
        raise NotImplementedError

    assert not check_nt_xent(unfinished)
