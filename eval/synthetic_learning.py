"""Learning proof: the untrained "synthetic" model vs the shipped builtin:synthetic on held-out synthetic videos.

    python eval/synthetic_learning.py --out outputs/synthetic_learning [--recipe-dir runs/builtin]

The held-out split is generated with a different seed than the training data (seed 2 vs 1) and the same
generator settings as the training clips of train/builtin_recipe.py (16-32 frames, 2-3 objects), evaluated with the
batch evaluation (``videolisa.evaluation``, the ``synthetic`` benchmark) and the exact metrics; J&F is reported
overall and per instruction kind. With ``--recipe-dir`` (the ``--work`` folder of
``train/builtin_recipe.py``) it also plots each stage's training loss and held-out scores over steps. Every instruction
of the example clips in ``demo/examples`` is scored too (J&F each).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from videolisa.cli import reports_errors

HELDOUT_SEED = 2
HELDOUT_VIDEOS = 40
EXAMPLES = Path(__file__).resolve().parents[1] / "demo" / "examples"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", default="builtin:synthetic", help="the trained model (default builtin:synthetic)")
    parser.add_argument("--data", type=Path, default=None, help="held-out data (generated under --out if absent)")
    parser.add_argument(
        "--recipe-dir", type=Path, default=None, help="the --work folder of train/builtin_recipe.py, for the curves"
    )
    parser.add_argument("--videos", type=int, default=HELDOUT_VIDEOS, help="held-out videos to generate")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--examples", type=Path, default=EXAMPLES, help="example clips to score each instruction of (demo/examples)"
    )
    return parser.parse_args(argv)


def heldout_data(args: argparse.Namespace) -> Path:
    """The held-out MeViS-layout split (``valid_u``), generated with seed 2 when not given."""
    from videolisa.synthetic import SyntheticConfig, write_synthetic_dataset

    if args.data is not None:
        return args.data
    target = args.out / "heldout"
    if not (target / "valid_u" / "meta_expressions.json").is_file():
        write_synthetic_dataset(
            target,
            layout="mevis",
            num_videos=args.videos,
            seed=HELDOUT_SEED,
            split="valid_u",
            config=SyntheticConfig(min_frames=16, max_frames=32, min_objects=2, max_objects=3),
            overwrite=True,
        )
    return target


def untrained_model_dir(out: Path, model: str) -> Path:
    """The trained model's own config with seeded random weights (what training starts from), saved for the
    predictor."""
    import torch

    from videolisa.builder import build_model
    from videolisa.checkpoint import load_tokenizer, resolve_model_dir
    from videolisa.config import VideoLisaConfig

    target = out / "untrained_model"
    if not (target / "config.json").is_file():
        torch.manual_seed(0)
        source = resolve_model_dir(model)
        build_model(VideoLisaConfig.from_pretrained(source)).save_pretrained(target, tokenizer=load_tokenizer(source))
    return target


def evaluate(model: str, data: Path, out: Path, device: str) -> dict:
    """Run the batch evaluation of ``model`` on the held-out split; returns its result dict."""
    from videolisa.evaluation import EvaluationConfig, run_evaluation

    return run_evaluation(
        EvaluationConfig(
            benchmark="synthetic",
            data_root=data,
            model=model,
            out=out,
            split="valid_u",
            device=device,
            dtype="fp32",
            chunk_size=16,
        )
    )


def score_examples(model: str, examples: Path) -> dict[str, dict[str, float]]:
    """J&F of every instruction of every example clip under ``examples`` (``videolisa synth --layout mp4`` folders:
    a video, ``masks/<obj_id>/<frame>.png`` and ``instructions.json``), with the benchmark's query templates."""
    import numpy as np

    from videolisa import VideoLisaPredictor
    from videolisa.benchmarks.mevis import synthetic_query
    from videolisa.mask_io import read_png_masks
    from videolisa.metrics import compute_jf

    predictor = VideoLisaPredictor.from_pretrained(model)
    scores: dict[str, dict[str, float]] = {}
    for sidecar in sorted(examples.glob("*/instructions.json")):
        folder, meta = sidecar.parent, json.loads(sidecar.read_text(encoding="utf-8"))
        masks = {
            obj["obj_id"]: read_png_masks(folder / "masks" / str(obj["obj_id"]), meta["frames"])
            for obj in meta["objects"]
        }
        expressions = [e for e in meta["expressions"] if e.get("obj_id") is not None]
        queries = [synthetic_query(e["text"], e["is_sent"]) for e in expressions]
        results = predictor.segment_many(folder / meta["video"], queries)
        for expression, result in zip(expressions, results):
            region, boundary = compute_jf(np.asarray(result.masks), masks[expression["obj_id"]])
            jf = float((region.mean() + boundary.mean()) / 2)
            scores.setdefault(folder.name, {})[expression["text"]] = round(jf, 3)
    return scores


def comparison_table(results: dict[str, dict]) -> str:
    """Markdown table: J&F (J / F) per model, overall and per instruction kind, in percent."""
    kinds = sorted({kind for result in results.values() for kind in result.get("subsets", {})})
    header = "| model | overall J&F (J / F) | " + " | ".join(kinds) + " |"
    lines = [header, "|---" * (len(kinds) + 2) + "|"]
    for name, result in results.items():
        overall = result["score"]["overall"]
        cells = [f"**{100 * overall['JF']:.1f}** ({100 * overall['J']:.1f} / {100 * overall['F']:.1f})"]
        cells += [f"{100 * result['subsets'][kind]['JF']:.1f}" for kind in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _smoothed(steps, values, points: int = 50):
    """A running mean over ``len / points`` steps, with the steps it ends at."""
    import numpy as np

    window = max(1, len(values) // points)
    return np.asarray(steps)[window - 1 :], np.convolve(values, np.ones(window) / window, mode="valid")


def _plot_stage1(axis, run_dir: Path) -> None:
    """Stage 1 (promptable SAM): DICE loss and the held-out IoU per prompt kind."""
    records = _read_jsonl(run_dir / "metrics.jsonl")
    axis.plot(*_smoothed([r["step"] for r in records], [r["dice"] for r in records]), color="tab:blue")
    axis.set_ylabel("DICE loss", color="tab:blue")
    held = [(r["step"], r["heldout"]) for r in records if "heldout" in r]
    twin = axis.twinx()
    for key, style in (
        ("semantic_iou", "o-"),
        ("point_iou", "s--"),
        ("box_iou", "^--"),
        ("semantic_cross_object_iou", "x:"),
    ):
        twin.plot([step for step, _ in held], [h[key] for _, h in held], style, label=key.replace("_", " "))
    twin.set_ylim(0, 1)
    twin.set_ylabel("held-out IoU")
    twin.legend(loc="center right", fontsize=7)
    axis.set_title("stage 1: promptable segmenter")


def _plot_deepspeed_run(axis, run_dir: Path, title: str) -> None:
    """A DeepSpeed stage: loss and, where validated, held-out J&F."""
    records = _read_jsonl(run_dir / "metrics.jsonl")
    axis.plot(*_smoothed([r["step"] for r in records], [r["loss"] for r in records]), color="tab:blue")
    # The loss weights of the run's model config: the curve is their weighted sum.
    model_config = json.loads((run_dir / "model" / "config.json").read_text())
    weights = " + ".join(f"{model_config[f'{name}_loss_weight']:g} {name.upper()}" for name in ("ce", "bce", "dice"))
    axis.set_ylabel(f"loss ({weights})" if "stage 3" in title else "CE loss", color="tab:blue")
    validations = sorted(
        (int(path.parent.name.split("_")[-1]), json.loads(path.read_text())["score"]["overall"]["JF"])
        for path in (run_dir / "validation").glob("*/results.json")
    )
    if validations:
        twin = axis.twinx()
        twin.plot(*zip(*validations), "o-", color="tab:red")
        twin.set_ylabel("held-out J&F (48 expressions)", color="tab:red")
        twin.set_ylim(0, 1)
    axis.set_title(title)


def plot_recipe_curves(recipe_dir: Path, target: Path) -> Path:
    """The three stages of ``train/builtin_recipe.py`` (its ``--work`` folder) side by side, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    _plot_stage1(axes[0], recipe_dir / "stage1")
    _plot_deepspeed_run(axes[1], recipe_dir / "stage2", "stage 2: video question answering")
    _plot_deepspeed_run(axes[2], recipe_dir / "stage3", "stage 3: VideoLISA recipe")
    for axis in axes:
        axis.set_xlabel("step")
    figure.suptitle("builtin:synthetic, staged recipe on a 2-core CPU (train/builtin_recipe.py)")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target


@reports_errors
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = heldout_data(args)
    untrained = str(untrained_model_dir(args.out, args.model))
    results = {
        "untrained": evaluate(untrained, data, args.out / "eval_untrained", args.device),
        args.model: evaluate(args.model, data, args.out / "eval_trained", args.device),
    }
    table = comparison_table(results)
    summary = {
        name: {"overall": result["score"]["overall"], "per_kind": result.get("subsets", {})}
        for name, result in results.items()
    }
    examples = score_examples(args.model, args.examples)
    summary["examples"] = examples
    example_lines = [f"| {clip} | {text} | {jf:.3f} |" for clip, rows in examples.items() for text, jf in rows.items()]
    table += (
        "\n\nExample clips (`demo/examples`), J&F per instruction:\n\n| clip | instruction | J&F |\n|---|---|---|\n"
    )
    table += "\n".join(example_lines)
    (args.out / "learning.json").write_text(json.dumps(summary, indent=2))
    (args.out / "learning.md").write_text(table + "\n")
    print(table)
    if args.recipe_dir is not None:
        print(f"learning curves: {plot_recipe_curves(args.recipe_dir, args.out / 'learning_curves.png')}")
    jf = {name: result["score"]["overall"]["JF"] for name, result in results.items()}
    print("RATIO " + " ".join(f"jf_{name.replace(':', '_')}={value:.3f}" for name, value in jf.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
