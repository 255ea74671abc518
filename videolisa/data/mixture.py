"""The training data mixture (docs/original.md §4.4): which datasets, where they are, how often each is drawn.

Sample ``i`` of a run is a pure function of ``(seed, i)``: a numpy Generator seeded with both chooses a
group with probability proportional to its rate, a member of the group uniformly, an item of the member
uniformly, and every random choice inside the sample. So the data order does not depend on worker
processes, and a resumed run continues exactly where it stopped (:class:`StepSampler` starts at the
checkpoint's step).

Groups (the keys of ``data.rates``; defaults = the final recipe, ``run_train.sh`` of the original):

========== ===== ===================================================================================
group      rate  members
========== ===== ===================================================================================
sem_seg    8     ``data.sem_seg``: ade20k, cocostuff, pascal_part, paco_lvis (uniform within the group)
refer_seg  4     ``data.refer_seg``: refclef, refcoco, refcoco+, refcocog (uniform within the group)
reason_seg 3     reason_seg (with the explanatory variant, ``data.explanatory``)
ytvos      4     YouTube-VOS
refytvos   6     Ref-YouTube-VOS
mevis      6     MeViS (``data.mevis_splits``)
refdavis   1     Ref-DAVIS17 train
vqa        0     LLaVA-Instruct conversations (optional)
custom     0     your JSONL files, ``data.custom_files`` (:mod:`videolisa.data.custom`)
========== ===== ===================================================================================

Only groups with a positive rate are built, so only their roots (``data.roots.<key>``) need to be set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from videolisa.data.base import DataRoot, TrainingDataset, draw_index
from videolisa.data.custom import CustomDataset
from videolisa.data.reasonseg import ReasonSegDataset
from videolisa.data.referring import REFER_DATASETS, ReferSegDataset
from videolisa.data.sample import NoTargetError, SampleConfig, TrainingSample
from videolisa.data.semantic import ADE20KDataset, CocoStuffDataset, PacoLvisDataset, PascalPartDataset
from videolisa.data.video import MeViSDataset, ReferFormerDataset, YouTubeVOSDataset
from videolisa.data.vqa import VqaDataset
from videolisa.errors import InvalidInputError, VideoLisaError

logger = logging.getLogger(__name__)

# Final recipe rates (docs/original.md §4.4: run_train.sh 8,4,3,4,6,1 with the Ref-VOS group rate on each video
# dataset).
DEFAULT_RATES: dict[str, float] = {
    "sem_seg": 8,
    "refer_seg": 4,
    "reason_seg": 3,
    "ytvos": 4,
    "refytvos": 6,
    "mevis": 6,
    "refdavis": 1,
    "vqa": 0,
    "custom": 0,
}
SEM_SEG_DATASETS = ("ade20k", "cocostuff", "pascal_part", "paco_lvis")
REFER_SEG_DATASETS = tuple(REFER_DATASETS)
ROOT_DESCRIPTIONS: dict[str, str] = {
    "ade20k": "the ADEChallengeData2016 folder (images/training, annotations/training, objectInfo150.txt)",
    "cocostuff": "the COCO-Stuff folder (train2017/*.png label maps, labels.txt)",
    "coco": "the COCO folder that holds train2017/ (images of COCO-Stuff, PACO-LVIS and VQA)",
    "pascal_part": "the PASCAL-Part folder (train.json, VOCdevkit/VOC2010/JPEGImages)",
    "paco_lvis": "the PACO folder (annotations/paco_lvis_v1_train.json)",
    "refer_seg": "the refer_seg folder (refclef/, refcoco/, refcoco+/, refcocog/, images/)",
    "reason_seg": "the ReasonSeg folder (train/*.jpg + *.json, explanatory/train.json)",
    "ytvos": "the YouTube-VOS folder (train/JPEGImages, train/Annotations, train/meta.json)",
    "refytvos": "the Ref-YouTube-VOS folder, ReferFormer layout (train/, meta_expressions/train/)",
    "refdavis": "the Ref-DAVIS17 folder, ReferFormer layout (train/, meta_expressions/train/)",
    "mevis": "the MeViS folder (<split>/JPEGImages, meta_expressions.json, mask_dict.json)",
    "vqa": "the LLaVA-Instruct conversation file (e.g. llava_instruct_150k.json)",
}
CLASS_NAME_KEYS = ("ade20k", "cocostuff")
# Redraws after items with nothing to segment before the mixture gives up on a sample.
MAX_DRAWS = 20


@dataclass
class DataConfig:
    """The ``data`` section of the training config.

    Attributes:
        rates: group -> relative sampling rate (see the module docstring); 0 leaves a group out.
        sem_seg / refer_seg: members of the two image groups.
        roots: dataset key -> folder (or file, for ``vqa``); see ``ROOT_DESCRIPTIONS``.
        class_names: optional class-name files for ``ade20k`` / ``cocostuff`` (default: the file in the root).
        mevis_splits: MeViS splits to train on.
        explanatory: probability of a text-only ReasonSeg answer (None: no explanations at all).
        custom_files: JSONL files of :mod:`videolisa.data.custom`.
        custom_targets: records of the same video asked about in one custom sample (multi-turn, one ``[SEG]``
            each; 1 = one target per sample, as every other dataset).
    """

    rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    sem_seg: list[str] = field(default_factory=lambda: list(SEM_SEG_DATASETS))
    refer_seg: list[str] = field(default_factory=lambda: list(REFER_SEG_DATASETS))
    roots: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(ROOT_DESCRIPTIONS))
    class_names: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(CLASS_NAME_KEYS))
    mevis_splits: list[str] = field(default_factory=lambda: ["train", "valid_u"])
    explanatory: float | None = 0.1
    custom_files: list[str] = field(default_factory=list)
    custom_targets: int = 1

    def validate(self) -> None:
        """Raise InvalidInputError naming the first bad key."""
        _check_subset("data.rates", self.rates, DEFAULT_RATES)
        _check_subset("data.roots", self.roots, ROOT_DESCRIPTIONS)
        _check_subset("data.class_names", self.class_names, CLASS_NAME_KEYS)
        _check_subset("data.sem_seg", self.sem_seg, SEM_SEG_DATASETS)
        _check_subset("data.refer_seg", self.refer_seg, REFER_SEG_DATASETS)
        for group, rate in self.rates.items():
            if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate < 0:
                raise InvalidInputError(f"data.rates.{group} must be a number >= 0, got {rate!r}")
        if not isinstance(self.custom_targets, int) or isinstance(self.custom_targets, bool) or self.custom_targets < 1:
            raise InvalidInputError(f"data.custom_targets must be an integer >= 1, got {self.custom_targets!r}")
        if not any(rate > 0 for rate in self.rates.values()):
            raise InvalidInputError("data.rates: at least one group needs a positive rate")
        for group in ("sem_seg", "refer_seg"):
            if self.rates.get(group, 0) > 0 and not getattr(self, group):
                raise InvalidInputError(f"data.{group} is empty but data.rates.{group} is positive")

    def group_members(self, group: str) -> list[str]:
        """Dataset names of a group."""
        if group in ("sem_seg", "refer_seg"):
            return list(getattr(self, group))
        return [group]


def _check_subset(key: str, values: Sequence[str] | dict, allowed: Sequence[str] | dict) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise InvalidInputError(f"{key} has unknown entries {unknown}; allowed: {sorted(allowed)}")


def data_root(config: DataConfig, key: str) -> DataRoot:
    """The checked root ``data.roots.<key>``."""
    return DataRoot(f"data.roots.{key}", config.roots.get(key), ROOT_DESCRIPTIONS[key])


def _class_names_file(config: DataConfig, key: str) -> Path | None:
    value = config.class_names.get(key)
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"data.class_names.{key}={path} does not exist")
    return path


DatasetBuilder = Callable[[DataConfig, SampleConfig], TrainingDataset]
DATASET_BUILDERS: dict[str, DatasetBuilder] = {
    "ade20k": lambda c, s: ADE20KDataset(s, data_root(c, "ade20k"), _class_names_file(c, "ade20k")),
    "cocostuff": lambda c, s: CocoStuffDataset(
        s, data_root(c, "cocostuff"), data_root(c, "coco"), _class_names_file(c, "cocostuff")
    ),
    "pascal_part": lambda c, s: PascalPartDataset(s, data_root(c, "pascal_part")),
    "paco_lvis": lambda c, s: PacoLvisDataset(s, data_root(c, "paco_lvis"), data_root(c, "coco")),
    **{name: (lambda c, s, name=name: ReferSegDataset(s, data_root(c, "refer_seg"), name)) for name in REFER_DATASETS},
    "reason_seg": lambda c, s: ReasonSegDataset(s, data_root(c, "reason_seg"), c.explanatory),
    "vqa": lambda c, s: VqaDataset(s, data_root(c, "vqa"), data_root(c, "coco")),
    "ytvos": lambda c, s: YouTubeVOSDataset(s, data_root(c, "ytvos")),
    "refytvos": lambda c, s: ReferFormerDataset(s, data_root(c, "refytvos"), "refytvos"),
    "refdavis": lambda c, s: ReferFormerDataset(s, data_root(c, "refdavis"), "refdavis"),
    "mevis": lambda c, s: MeViSDataset(s, data_root(c, "mevis"), c.mevis_splits),
    "custom": lambda c, s: CustomDataset(s, c.custom_files, c.custom_targets),
}


def build_dataset_groups(config: DataConfig, settings: SampleConfig) -> dict[str, list[TrainingDataset]]:
    """Build every dataset of every group with a positive rate (checking their roots and annotations)."""
    config.validate()
    groups = {}
    for group, rate in config.rates.items():
        if rate > 0:
            groups[group] = [DATASET_BUILDERS[name](config, settings) for name in config.group_members(group)]
            logger.info("data group %s (rate %s): %s", group, rate, groups[group])
    return groups


class MixtureDataset(torch.utils.data.Dataset):
    """``length`` samples drawn from dataset groups by rate; sample ``i`` depends only on ``(seed, i)``."""

    def __init__(
        self, groups: dict[str, Sequence[TrainingDataset]], rates: dict[str, float], seed: int, length: int
    ) -> None:
        self.groups = {name: list(members) for name, members in groups.items()}
        for name, members in self.groups.items():
            if not members or any(len(member) == 0 for member in members):
                raise InvalidInputError(f"data group {name!r} has no items")
        missing = sorted(set(self.groups) - set(rates))
        if missing:
            raise InvalidInputError(f"data groups {missing} have no rate")
        self.names = list(self.groups)
        weights = np.array([float(rates[name]) for name in self.names])
        if (weights <= 0).any():
            rates_given = dict(zip(self.names, weights.tolist()))
            raise InvalidInputError(f"every built data group needs a positive rate, got {rates_given}")
        self.probabilities = weights / weights.sum()
        self.seed = seed
        self.length = length

    def __len__(self) -> int:
        return self.length

    def generator(self, index: int) -> np.random.Generator:
        """The Generator that draws sample ``index``."""
        return np.random.default_rng([self.seed, index])

    def draw(self, rng: np.random.Generator) -> tuple[str, TrainingDataset, int]:
        """(group, dataset, item index) of the next draw."""
        group = self.names[int(rng.choice(len(self.names), p=self.probabilities))]
        members = self.groups[group]
        dataset = members[draw_index(len(members), rng)]
        return group, dataset, draw_index(len(dataset), rng)

    def __getitem__(self, index: int) -> TrainingSample:
        rng = self.generator(index)
        for _ in range(MAX_DRAWS):
            group, dataset, item = self.draw(rng)
            try:
                sample = dataset.build_sample(item, rng)
            except NoTargetError as reason:
                logger.warning(
                    "sample %d: %s item %d has nothing to segment (%s); drawing again",
                    index,
                    dataset.name,
                    item,
                    reason,
                )
                continue
            except VideoLisaError as error:
                raise InvalidInputError(f"training sample {index} ({dataset.name} item {item}): {error}") from error
            sample.metadata.update(index=index, group=group, item=item)
            return sample
        raise InvalidInputError(f"training sample {index}: {MAX_DRAWS} draws in a row had nothing to segment")


class StepSampler(torch.utils.data.Sampler[int]):
    """The sample indices one rank processes, optimizer step after optimizer step.

    Step ``s`` consumes the ``global_batch = micro_batch_size x accumulation_steps x world_size`` samples
    ``s x global_batch ...``; micro-step ``a`` of rank ``r`` takes the ``micro_batch_size`` samples starting at
    ``s x global_batch + (a x world_size + r) x micro_batch_size``. Starting at ``start_step`` skips exactly
    what earlier steps consumed.
    """

    def __init__(
        self,
        start_step: int,
        total_steps: int,
        micro_batch_size: int,
        accumulation_steps: int,
        world_size: int,
        rank: int,
    ) -> None:
        if not 0 <= start_step <= total_steps:
            raise InvalidInputError(f"start step {start_step} must be in [0, {total_steps}]")
        if not 0 <= rank < world_size:
            raise InvalidInputError(f"rank {rank} must be in [0, {world_size})")
        self.start_step = start_step
        self.total_steps = total_steps
        self.micro_batch_size = micro_batch_size
        self.accumulation_steps = accumulation_steps
        self.world_size = world_size
        self.rank = rank

    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step over all ranks."""
        return self.micro_batch_size * self.accumulation_steps * self.world_size

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.total_steps):
            for micro_step in range(self.accumulation_steps):
                slot = micro_step * self.world_size + self.rank
                first = step * self.global_batch_size + slot * self.micro_batch_size
                yield from range(first, first + self.micro_batch_size)

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.accumulation_steps * self.micro_batch_size
