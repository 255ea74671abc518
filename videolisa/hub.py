"""Sharing a model like a Hugging Face Hub model: a model card (``README.md`` with YAML metadata) for an exported
or converted model folder, and pushing the folder to a Hub repository.

The card's metadata (parsed by the Hub and by ``huggingface_hub.ModelCard``) holds the license, the base model,
``library_name: videolisa``, the pipeline tag and tags, the datasets of the training mixture and a ``model-index``
with the run's validation result and the scores of any ``videolisa eval`` / ``videolisa score`` reports given. The
text says how to load the model, and, for an exported training run, the training command and its resolved config.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videolisa.errors import InvalidInputError, MissingFilesError, VideoLisaError

CARD_FILE = "README.md"
LIBRARY_NAME = "videolisa"
PIPELINE_TAG = "image-segmentation"  # the Hub's closest task: masks from an image (here every frame) and a prompt
TAGS = [
    "videolisa",
    "video-object-segmentation",
    "referring-video-object-segmentation",
    "reasoning-segmentation",
    "segment-anything",
]
DEFAULT_LICENSE = "apache-2.0"  # the license of VideoLISA's code and released weights
# Metrics of the score reports: report key -> (name on the card, task type of the model-index).
_METRICS = {
    "J": ("J", "video-object-segmentation"),
    "F": ("F", "video-object-segmentation"),
    "JF": ("J&F", "video-object-segmentation"),
    "cIoU": ("cIoU", "image-segmentation"),
    "gIoU": ("gIoU", "image-segmentation"),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(VideoLisaError):
    """The Hub cannot be reached (offline, no network, no token) or refused the upload."""


@dataclass
class Score:
    """One result for the model-index: ``metric`` (J, F, J&F, cIoU, gIoU) in percent on ``benchmark`` / ``split``,
    from ``source`` (the run's validation or a report file)."""

    benchmark: str
    split: str | None
    metric: str
    value: float
    source: str


@dataclass
class TrainingRecord:
    """What the card says about how the model was trained (None fields are left out)."""

    config: dict[str, Any]
    command: str | None = None
    commit: str | None = None
    datasets: list[str] = field(default_factory=list)
    base_model: str | None = None


def read_score_report(path: Path) -> list[Score]:
    """The overall scores of a ``videolisa eval`` ``results.json`` or a ``videolisa score`` report JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise MissingFilesError(f"evaluation report {path} not found") from error
    except (OSError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"evaluation report {path} is not readable JSON: {error}") from error
    overall = (data.get("score") or {}).get("overall") if "score" in data else data.get("overall")
    if not isinstance(overall, dict) or "benchmark" not in data:
        raise InvalidInputError(
            f"{path} is not a videolisa evaluation report (results.json of videolisa eval with a score, or the "
            "JSON of videolisa score)"
        )
    return [
        Score(data["benchmark"], data.get("split"), _METRICS[key][0], round(100 * value, 2), path.name)
        for key, value in overall.items()
        if key in _METRICS and value is not None
    ]


def hub_model_id(source: str | None) -> str | None:
    """``source`` if it names a Hub model (``org/name``, not an existing local path), else None."""
    if source and _HUB_ID.match(source) and not Path(source).expanduser().exists():
        return source
    return None


def training_record(run_dir: Path) -> TrainingRecord:
    """What a training run folder says about its model: the resolved config, the command and commit of its first
    start (``tracking.json``), the datasets of its mixture and the base model (``model.path`` when it is a Hub id)."""
    from dataclasses import asdict

    from videolisa.training.config import load_training_config
    from videolisa.training.run import RUN_CONFIG_FILE
    from videolisa.training.tracking import TRACKING_FILE

    config = load_training_config(run_dir / RUN_CONFIG_FILE)
    tracking = run_dir / TRACKING_FILE
    started = json.loads(tracking.read_text())["git_commits"][0] if tracking.is_file() else {}
    data = config.data
    datasets = [name for group, rate in data.rates.items() if rate > 0 for name in data.group_members(group)]
    base = hub_model_id(config.model.path) if config.model.source in ("llava_phi3", "pretrained") else None
    return TrainingRecord(
        config=asdict(config),
        command=started.get("command"),
        commit=started.get("commit"),
        datasets=datasets,
        base_model=base,
    )


def run_validation_scores(run_dir: Path, tag: str) -> list[Score]:
    """The validation score of checkpoint ``tag`` when it is the run's best (``checkpoints/best.json``)."""
    from videolisa.training.config import load_training_config
    from videolisa.training.run import RUN_CONFIG_FILE, read_best

    best = read_best(run_dir)
    if best is None or best["tag"] != tag:
        return []
    validation = load_training_config(run_dir / RUN_CONFIG_FILE).validation
    name = _METRICS.get(best["metric"], (best["metric"],))[0]
    return [
        Score(
            validation.benchmark,
            validation.split,
            name,
            round(100 * best["score"], 2),
            f"validation at step {best['step']}",
        )
    ]


def build_model_card(
    model_dir: Path,
    training: TrainingRecord | None = None,
    scores: Sequence[Score] = (),
    license: str = DEFAULT_LICENSE,
    base_model: str | None = None,
) -> Any:
    """The ``huggingface_hub.ModelCard`` of the model folder ``model_dir`` (its ``config.json`` must exist)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise MissingFilesError(f"{config_path} not found: {model_dir} is not a model folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    name = model_dir.resolve().name
    base = base_model or (training.base_model if training else None)
    data = ModelCardData(
        license=license,
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        tags=list(TAGS),
        base_model=base,
        datasets=(training.datasets or None) if training else None,
        model_name=name,
        eval_results=[
            EvalResult(
                task_type=_task_of(score.metric),
                dataset_type=score.benchmark,
                dataset_name=score.benchmark,
                dataset_split=score.split,
                metric_type=score.metric,
                metric_name=score.metric,
                metric_value=score.value,
            )
            for score in scores
        ]
        or None,
    )
    body = _card_body(name, config, training, scores, base)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _task_of(metric: str) -> str:
    return next(task for name, task in _METRICS.values() if name == metric)


def _card_body(
    name: str, config: dict[str, Any], training: TrainingRecord | None, scores: Sequence[Score], base: str | None
) -> str:
    """The markdown text of the card: what it is, how to load it, results, how it was trained."""
    import yaml

    llm = (config.get("text_config") or {}).get("model_type", "?")
    sam = (config.get("sam_config") or {}).get("variant", "?")
    lines = [
        f"# {name}",
        "",
        "A [VideoLISA](https://github.com/showlab/VideoLISA) model (language-instructed reasoning segmentation in "
        f"videos) in the `videolisa` package's format: a `{llm}` language model reading the video through "
        f"Sparse-Dense Sampling and a SAM (`{sam}`) mask decoder prompted by its `[SEG]` token on every frame.",
        *([f"Fine-tuned from [`{base}`](https://huggingface.co/{base})."] if base else []),
        "",
        "## How to use",
        "",
        "```bash",
        "pip install videolisa",
        f'videolisa infer --model REPO_OR_DIR --video my_video.mp4 --prompt "the object to segment" --out out/{name}',
        "```",
        "",
        "```python",
        "from videolisa import VideoLisaPredictor",
        "",
        'predictor = VideoLisaPredictor.from_pretrained("REPO_OR_DIR")',
        'result = predictor.segment("my_video.mp4", "the object to segment")',
        "",
        "# or through transformers' Auto classes, once videolisa is imported:",
        "import videolisa",
        "from transformers import AutoModel",
        'model = AutoModel.from_pretrained("REPO_OR_DIR")  # a videolisa VideoLisaForSegmentation',
        "```",
        "",
        "`REPO_OR_DIR` is this repository's id on the Hub or a local copy of this folder.",
    ]
    if scores:
        lines += ["", "## Results", "", "| benchmark | split | metric | value (%) | source |", "|---|---|---|---|---|"]
        lines += [f"| {s.benchmark} | {s.split or ''} | {s.metric} | {s.value:.2f} | {s.source} |" for s in scores]
    if training is not None:
        lines += ["", "## Training", ""]
        if training.command:
            lines += ["Command:", "", "```bash", training.command, "```", ""]
        if training.commit:
            lines += [f"Code: `videolisa` at git commit `{training.commit}`.", ""]
        if training.datasets:
            lines += [f"Datasets of the mixture: {', '.join(training.datasets)}.", ""]
        lines += [
            "Resolved training config (`train_config.yaml`):",
            "",
            "```yaml",
            yaml.safe_dump(training.config, sort_keys=False).rstrip(),
            "```",
        ]
    return "\n".join(lines) + "\n"


def write_run_model_card(
    run_dir: Path,
    model_dir: Path,
    tag: str | None,
    eval_reports: Sequence[Path] = (),
    license: str = DEFAULT_LICENSE,
    base_model: str | None = None,
) -> Path:
    """Write the card of ``model_dir``, exported from checkpoint ``tag`` (as :func:`resolve_export_tag` reads it)
    of the training run ``run_dir``: the run's config, command, datasets and validation result, and the scores of
    ``eval_reports``. Returns the card's path."""
    from videolisa.training.export import resolve_export_tag

    run_dir = run_dir.expanduser().resolve()
    scores = run_validation_scores(run_dir, resolve_export_tag(run_dir, tag))
    scores += [score for path in eval_reports for score in read_score_report(path)]
    card = build_model_card(model_dir, training_record(run_dir), scores, license=license, base_model=base_model)
    return write_model_card(model_dir, card)


def write_model_card(model_dir: Path, card: Any) -> Path:
    """Write ``card`` as ``model_dir/README.md`` (atomically); returns the path."""
    from videolisa.atomic import write_atomically

    path = model_dir / CARD_FILE
    write_atomically(path, str(card).encode("utf-8"))
    return path


def push_to_hub(model_dir: Path, repo_id: str, private: bool = False) -> str:
    """Upload the model folder ``model_dir`` to the Hub model repository ``repo_id`` (created if missing, private
    with ``private``), using the usual Hugging Face token (``HF_TOKEN`` or ``hf auth login``). Returns the
    repository's URL.

    Raises:
        HubError: offline (``HF_HUB_OFFLINE``), no network, no or a wrong token, or an upload refused.
    """
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not (model_dir / "config.json").is_file():
        raise MissingFilesError(f"{model_dir / 'config.json'} not found: {model_dir} is not a model folder")
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(model_dir),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"Upload {model_dir.resolve().name} with videolisa",
        )
    except (OSError, HfHubHTTPError, httpx.HTTPError) as error:  # OfflineModeIsEnabled is a ConnectionError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HubError(f"cannot push {model_dir} to the Hub repository {repo_id}: {reason}") from error
    return str(url)
