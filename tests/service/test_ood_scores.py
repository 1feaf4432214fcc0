"""The OOD scores' statistics files and the knn score (service.trust.ood), against cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from service.inference.decision import DecisionRule
from service.trust.ood import Block, FeatureStats, Neighbours, OodScorer

RULE = DecisionRule("binary", ("normal", "cancer"), "normal")  # feature scores ignore the rule
# Three unit rows in the features' columns 1..3 (column 0 belongs to another block)
BANK = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]], dtype=np.float32)


def _knn(k: int = 1) -> OodScorer:
    return OodScorer("knn", RULE, FeatureStats(neighbours=Neighbours(1, 4, BANK, k)))


def test_knn_scores_the_cosine_distance_to_the_nearest_training_image_whatever_the_length():
    features = np.array(
        [
            [9.0, 5.0, 0.0, 0.0],  # 5 x the first bank row: distance 0 (only direction counts)
            [9.0, 0.0, 0.0, 2.0],  # orthogonal to every row: 1
            [9.0, -1.0, 0.0, 0.0],  # opposite the first row, orthogonal to the second: 1 - cos = 1
            [9.0, 0.8, 0.6, 0.0],  # nearest is (0.6, 0.8, 0): cos 0.96
            [9.0, 0.0, 0.0, 0.0],  # nothing fired in this block: as far as can be
        ]
    )
    assert _knn()(None, features) == pytest.approx([0.0, 1.0, 1.0, 0.04, 1.0], abs=1e-6)


def test_knn_with_k_two_reads_the_second_nearest():
    # (0.8, 0.6, 0): cosines 0.8, 0.6 and 0.96 with the three rows; the second largest is 0.8
    assert _knn(k=2)(None, np.array([[0.0, 0.8, 0.6, 0.0]])) == pytest.approx([0.2], abs=1e-6)


def test_statistics_files_round_trip_with_blocks_a_bank_or_both():
    block = Block(0, 2, np.array([[1.0, 2.0]]), np.eye(2), scale=3.0)
    bank = Neighbours(1, 4, BANK, 2)
    for stats in (FeatureStats((block,)), FeatureStats(neighbours=bank), FeatureStats((block,), bank)):
        back = FeatureStats.from_bytes(stats.to_bytes())
        assert len(back.blocks) == len(stats.blocks)
        for got, want in zip(back.blocks, stats.blocks, strict=True):
            assert (got.start, got.stop, got.scale) == (want.start, want.stop, want.scale)
            assert np.array_equal(got.means, want.means) and np.array_equal(got.precision, want.precision)
        assert (back.neighbours is None) == (stats.neighbours is None)
        if stats.neighbours is not None:
            assert (back.neighbours.start, back.neighbours.stop, back.neighbours.k) == (1, 4, stats.neighbours.k)
            assert np.array_equal(back.neighbours.bank, BANK)


@pytest.mark.parametrize(
    ("neighbours", "problem"),
    [
        (Neighbours(1, 3, BANK), "inconsistent shapes"),  # a 2-wide slice for 3-wide rows
        (Neighbours(1, 4, BANK, k=4), "inconsistent shapes"),  # the 4th nearest of three rows
    ],
)
def test_a_bank_that_does_not_fit_its_slice_is_refused(neighbours: Neighbours, problem: str):
    with pytest.raises(ValueError, match=problem):
        FeatureStats.from_bytes(FeatureStats(neighbours=neighbours).to_bytes())


def test_empty_statistics_and_the_wrong_kind_for_a_method_are_refused():
    with pytest.raises(ValueError, match="no block and no neighbour bank"):
        FeatureStats.from_bytes(FeatureStats().to_bytes())
    with pytest.raises(ValueError, match="knn method needs a nearest-neighbour bank"):
        OodScorer("knn", RULE, FeatureStats((Block(0, 1, np.zeros((1, 1)), np.eye(1)),)))
    with pytest.raises(ValueError, match="multilayer method needs feature blocks"):
        OodScorer("multilayer", RULE, FeatureStats(neighbours=Neighbours(1, 4, BANK)))
