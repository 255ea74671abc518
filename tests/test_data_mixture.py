"""The rate-based mixture, its determinism, the step sampler and the data config checks."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from videolisa.data.base import TrainingDataset
from videolisa.data.mixture import DEFAULT_RATES, MAX_DRAWS, DataConfig, MixtureDataset, StepSampler
from videolisa.data.sample import NoTargetError, SampleConfig, TrainingSample
from videolisa.errors import InvalidInputError, VideoReadError


class FakeDataset(TrainingDataset):
    """Samples that record which item and which random number they were built from."""

    def __init__(
        self, name: str, size: int, fail_items: set[int] = frozenset(), error: Exception | None = None
    ) -> None:
        super().__init__(SampleConfig())
        self.name, self.size, self.fail_items, self.error = name, size, fail_items, error

    def __len__(self) -> int:
        return self.size

    def build_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        if self.error is not None:
            raise self.error
        if index in self.fail_items:
            raise NoTargetError(f"item {index} is empty")
        return TrainingSample(
            pixel_values_clip=torch.zeros(1),
            pixel_values_sam=torch.zeros(1),
            dense_positions=[0],
            conversation=[],
            target_masks=torch.zeros(0),
            resized_hw=(1, 1),
            original_hw=(1, 1),
            metadata={"dataset": self.name, "draw": float(rng.random())},
        )


def test_groups_follow_the_rates_and_members_are_uniform():
    rates = {"sem_seg": 8, "refer_seg": 4, "reason_seg": 3, "mevis": 6, "refdavis": 1}
    groups = {name: [FakeDataset(name, 5)] for name in rates}
    groups["sem_seg"] = [FakeDataset(member, 7) for member in ("ade20k", "cocostuff", "pascal_part", "paco_lvis")]
    mixture = MixtureDataset(groups, rates, seed=3, length=10_000)
    draws = [mixture.draw(mixture.generator(index)) for index in range(10_000)]
    group_counts = Counter(group for group, _, _ in draws)
    expected = np.array([rates[name] for name in rates], dtype=float)
    observed = np.array([group_counts[name] for name in rates], dtype=float)
    assert chisquare(observed, expected / expected.sum() * observed.sum()).pvalue > 1e-3
    members = Counter(dataset.name for group, dataset, _ in draws if group == "sem_seg")
    assert chisquare(list(members.values())).pvalue > 1e-3 and len(members) == 4
    items = Counter(item for group, _, item in draws if group == "reason_seg")
    assert set(items) == set(range(5)) and chisquare(list(items.values())).pvalue > 1e-3


def test_a_rate_far_off_is_detected():
    """The chi-square check above can fail: counts drawn with other rates are rejected."""
    rates = {"a": 8, "b": 4}
    mixture = MixtureDataset({name: [FakeDataset(name, 3)] for name in rates}, {"a": 6, "b": 6}, seed=0, length=10_000)
    counts = Counter(mixture.draw(mixture.generator(index))[0] for index in range(10_000))
    observed = [counts["a"], counts["b"]]
    assert chisquare(observed, [10_000 * 8 / 12, 10_000 * 4 / 12]).pvalue < 1e-6


def test_samples_depend_only_on_seed_and_index():
    groups = {"a": [FakeDataset("a", 100)], "b": [FakeDataset("b", 100)]}
    mixture = MixtureDataset(groups, {"a": 1, "b": 1}, seed=11, length=50)
    forward = [mixture[index].metadata for index in range(20)]
    backward = [mixture[index].metadata for index in reversed(range(20))][::-1]
    assert forward == backward
    assert len({(m["dataset"], m["item"], m["draw"]) for m in forward}) == 20
    other_seed = MixtureDataset(groups, {"a": 1, "b": 1}, seed=12, length=50)
    assert [other_seed[i].metadata for i in range(20)] != forward


def test_items_without_target_are_redrawn_and_logged(caplog):
    groups = {"a": [FakeDataset("a", 4, fail_items={0, 1, 2})]}
    mixture = MixtureDataset(groups, {"a": 1}, seed=0, length=40)
    with caplog.at_level(logging.WARNING, logger="videolisa.data.mixture"):
        items = {mixture[index].metadata["item"] for index in range(40)}
    assert items == {3}
    assert "has nothing to segment" in caplog.text
    hopeless = MixtureDataset({"a": [FakeDataset("a", 2, fail_items={0, 1})]}, {"a": 1}, seed=0, length=1)
    with pytest.raises(InvalidInputError, match=f"{MAX_DRAWS} draws"):
        hopeless[0]


def test_read_errors_name_the_sample_and_dataset():
    broken = MixtureDataset({"a": [FakeDataset("a", 2, error=VideoReadError("cannot decode x.jpg"))]}, {"a": 1}, 0, 5)
    with pytest.raises(InvalidInputError, match=r"training sample 4 \(a item \d\): cannot decode x.jpg"):
        broken[4]


def test_mixture_rejects_groups_without_rate_or_items():
    with pytest.raises(InvalidInputError, match="no rate"):
        MixtureDataset({"a": [FakeDataset("a", 1)]}, {}, 0, 1)
    with pytest.raises(InvalidInputError, match="no items"):
        MixtureDataset({"a": [FakeDataset("a", 0)]}, {"a": 1}, 0, 1)


@pytest.mark.parametrize(("world_size", "micro", "accumulation"), [(1, 2, 3), (2, 1, 3), (3, 2, 1)])
def test_step_sampler_partitions_each_step(world_size, micro, accumulation):
    samplers = [StepSampler(0, 4, micro, accumulation, world_size, rank) for rank in range(world_size)]
    global_batch = micro * accumulation * world_size
    streams = [list(sampler) for sampler in samplers]
    per_step = micro * accumulation
    for step in range(4):
        taken = sorted(index for stream in streams for index in stream[step * per_step : (step + 1) * per_step])
        assert taken == list(range(step * global_batch, (step + 1) * global_batch))
    resumed = [list(StepSampler(2, 4, micro, accumulation, world_size, rank)) for rank in range(world_size)]
    assert resumed == [stream[2 * per_step :] for stream in streams]
    assert len(samplers[0]) == 4 * per_step


def test_step_sampler_micro_batches_match_across_world_sizes():
    """1 process x 2 micro-steps and 2 processes x 1 micro-step see the same micro-batches in the same slots."""
    single = list(StepSampler(0, 3, 2, 2, 1, 0))
    ranks = [list(StepSampler(0, 3, 2, 1, 2, rank)) for rank in range(2)]
    for step in range(3):
        assert single[4 * step : 4 * step + 2] == ranks[0][2 * step : 2 * step + 2]
        assert single[4 * step + 2 : 4 * step + 4] == ranks[1][2 * step : 2 * step + 2]


def test_data_config_validation():
    DataConfig().validate()
    assert DataConfig().rates == DEFAULT_RATES
    with pytest.raises(InvalidInputError, match=r"data.rates has unknown entries \['mystery'\]"):
        DataConfig(rates={"mystery": 1}).validate()
    with pytest.raises(InvalidInputError, match="data.rates.mevis must be a number >= 0"):
        DataConfig(rates={**DEFAULT_RATES, "mevis": -1}).validate()
    with pytest.raises(InvalidInputError, match="at least one group"):
        DataConfig(rates=dict.fromkeys(DEFAULT_RATES, 0)).validate()
    with pytest.raises(InvalidInputError, match=r"data.sem_seg has unknown entries \['mapillary'\]"):
        DataConfig(sem_seg=["mapillary"]).validate()
    with pytest.raises(InvalidInputError, match=r"data.roots has unknown entries \['kinetics'\]"):
        DataConfig(roots={"kinetics": "/x"}).validate()
    for bad in (0, 2.5, True):
        with pytest.raises(InvalidInputError, match="data.custom_targets must be an integer >= 1"):
            DataConfig(custom_targets=bad).validate()


@pytest.mark.launcher
def test_importing_the_data_package_loads_neither_deepspeed_nor_peft():
    import subprocess
    import sys

    code = "import sys, videolisa.data; print(sorted({'deepspeed', 'peft'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
