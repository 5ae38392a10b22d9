"""The sample-quality judge: a classifier that knows digits, and a Frechet distance that is one."""

from __future__ import annotations

import pytest
import torch

from gan import data, quality


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    gen = torch.Generator().manual_seed(0)
    n, d = 200_000, 4
    sd_a, sd_b = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([1.0, 1.0, 1.5, 3.0])
    shift = torch.tensor([0.0, 1.0, -2.0, 0.5])
    a = torch.randn(n, d, generator=gen, dtype=torch.float64) * sd_a
    b = torch.randn(n, d, generator=gen, dtype=torch.float64) * sd_b + shift
    # diagonal covariances: ||mu_a - mu_b||^2 + sum (sd_a - sd_b)^2
    want = float(shift.square().sum() + (sd_a - sd_b).square().sum())
    assert quality.frechet_distance(a, b) == pytest.approx(want, rel=0.02)
    assert abs(quality.frechet_distance(a, a)) < 1e-6


def test_frechet_distance_sees_correlation():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(100_000, 2, generator=gen, dtype=torch.float64)
    b = a.clone()
    b[:, 1] = a[:, 0]  # same marginals, fully correlated: S_b = [[1, 1], [1, 1]]
    # Tr(S_a + S_b - 2 sqrt(S_b)) with sqrt(S_b) = S_b / sqrt(2): 4 - 2 * 2 / sqrt(2)
    assert quality.frechet_distance(a, b) == pytest.approx(4 - 2 * 2 ** 0.5, rel=0.02)


@pytest.fixture(scope="module")
def digits():
    return data.mnist(16)


@pytest.fixture(scope="module")
def classifier(digits):
    images, labels = digits
    return quality.train_classifier(images, labels, epochs=3)


def test_the_classifier_knows_digits(classifier):
    assert classifier.test_accuracy >= 0.9


def test_real_digits_score_far_better_than_noise(classifier, digits):
    images, _ = digits
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(3))  # the file is sorted by class
    real, other = images[order[:1000]], images[order[1000:2000]]
    noise = torch.rand(1000, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    on_real = quality.sample_quality(classifier, real, other)
    on_noise = quality.sample_quality(classifier, noise, other)
    assert sum(on_real["class_histogram"]) == on_real["images"] == 1000
    assert min(on_real["class_histogram"]) > 50  # every digit shows up among real ones
    assert on_real["mean_confidence"] > max(0.8, on_noise["mean_confidence"] + 0.1)
    assert on_real["frechet_distance"] < on_noise["frechet_distance"] / 10


def test_a_collapsed_generator_shows_in_the_histogram_and_the_distance(classifier, digits):
    images, labels = digits
    threes, balanced = images[labels == 3][:400], images[:: len(images) // 400][:400]
    collapsed = quality.sample_quality(classifier, threes, images)
    varied = quality.sample_quality(classifier, balanced, images)
    assert collapsed["class_histogram"][3] > 0.8 * 400
    assert collapsed["frechet_distance"] > 10 * varied["frechet_distance"]
