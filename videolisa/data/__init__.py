"""Training data: dataset readers per family, the rate-based mixture, and collation with label masking.

* :mod:`videolisa.data.semantic` (ADE20K, COCO-Stuff, PASCAL-Part, PACO-LVIS),
  :mod:`videolisa.data.referring` (refCLEF, refCOCO, refCOCO+, refCOCOg), :mod:`videolisa.data.reasonseg`,
  :mod:`videolisa.data.vqa` (images as pseudo-videos);
* :mod:`videolisa.data.video` (YouTube-VOS, Ref-YouTube-VOS, Ref-DAVIS17, MeViS);
* :mod:`videolisa.data.custom`: the JSONL format for your own videos, instructions and masks;
* :mod:`videolisa.data.mixture`: :class:`DataConfig` (the ``data`` section of the training config),
  :func:`build_dataset_groups`, :class:`MixtureDataset`, :class:`StepSampler`;
* :mod:`videolisa.data.collate`: :class:`VideoLisaCollator` -> :class:`~videolisa.modeling.batch.VideoLisaBatch`.

Nothing here imports DeepSpeed or peft.
"""

from videolisa.data.collate import VideoLisaCollator, tokenize_conversation
from videolisa.data.mixture import DataConfig, MixtureDataset, StepSampler, build_dataset_groups
from videolisa.data.sample import SampleConfig, TrainingSample

__all__ = [
    "DataConfig",
    "MixtureDataset",
    "SampleConfig",
    "StepSampler",
    "TrainingSample",
    "VideoLisaCollator",
    "build_dataset_groups",
    "tokenize_conversation",
]
