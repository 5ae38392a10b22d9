"""Sample quality of a generator, judged by a small plaintext MNIST classifier.

The classifier (two conv blocks, a 64-unit hidden layer, 10 classes) is trained on the
bundled digits at the generator's image size, from a fixed seed, on the owner's side (it
never sees shares). For a batch of generated images it gives the mean confidence (the
mean of the largest softmax probability), the class histogram, and the Frechet distance
between the Gaussians fitted to its 64 penultimate features on the generated images and
on real digits (FID's formula, with this classifier in place of Inception).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def _network(size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (size // 4) ** 2, 64), nn.ReLU(),  # the features
        nn.Linear(64, 10))


@dataclass
class Classifier:
    network: nn.Sequential
    test_accuracy: float  # on held-out bundled digits

    @torch.no_grad()
    def features_and_probabilities(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.network.eval()
        features = self.network[:-1](images.float())
        return features.double(), torch.softmax(self.network[-1](features), dim=1).double()


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 4, held_out: int = 500,
                     seed: int = 0) -> Classifier:
    """Adam on all but `held_out` digits (chosen by the seed); a few seconds at 16x16."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=gen)
    test, train = order[:held_out], order[held_out:]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _network(images.shape[-1])
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        net.train()
        for batch in train[torch.randperm(len(train), generator=gen)].split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(images[batch].float()), labels[batch]).backward()
            opt.step()
    classifier = Classifier(net, 0.0)
    _, probs = classifier.features_and_probabilities(images[test])
    classifier.test_accuracy = float((probs.argmax(1) == labels[test]).double().mean())
    return classifier


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) for rows of features a and b."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    # Tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD matrix
    values, vectors = torch.linalg.eigh(s_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * cross)


def sample_quality(classifier: Classifier, generated: torch.Tensor, real: torch.Tensor) -> dict:
    """Mean confidence, class histogram and Frechet distance to `real` of `generated` images."""
    fake_features, probs = classifier.features_and_probabilities(generated)
    real_features, _ = classifier.features_and_probabilities(real)
    return {"images": len(generated), "mean_confidence": float(probs.max(1).values.mean()),
            "class_histogram": torch.bincount(probs.argmax(1), minlength=10).tolist(),
            "frechet_distance": frechet_distance(fake_features, real_features)}
