"""Learning proof: the untrained "synthetic" model vs the shipped builtin:synthetic on held-out synthetic videos.

    python eval/synthetic_learning.py --out outputs/synthetic_learning [--run-dir runs/builtin/stage3]

The held-out split is generated with a different seed than the training data (seed 2 vs 1) and the same
generator settings as the training clips of train/builtin_recipe.py (16-32 frames, 2-3 objects), evaluated with the
batch evaluation (``videolisa.evaluation``, the ``synthetic`` benchmark) and the exact metrics; J&F is reported
overall and per instruction kind. With ``--run-dir`` (a training run, e.g. stage 3 of
``train/builtin_recipe.py``) it also plots the training loss and the held-out J&F over steps. Every instruction
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
    parser.add_argument("--run-dir", type=Path, default=None, help="training run folder, for the learning curves")
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
    from videolisa.checkpoint import resolve_model_dir
    from videolisa.config import VideoLisaConfig
    from videolisa.tokenization import build_tiny_tokenizer

    target = out / "untrained_model"
    if not (target / "config.json").is_file():
        torch.manual_seed(0)
        config = VideoLisaConfig.from_pretrained(resolve_model_dir(model))
        build_model(config).save_pretrained(target, tokenizer=build_tiny_tokenizer(config.seg_token))
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
    from PIL import Image

    from videolisa import VideoLisaPredictor
    from videolisa.benchmarks.mevis import synthetic_query
    from videolisa.metrics import compute_jf

    predictor = VideoLisaPredictor.from_pretrained(model)
    scores: dict[str, dict[str, float]] = {}
    for sidecar in sorted(examples.glob("*/instructions.json")):
        folder, meta = sidecar.parent, json.loads(sidecar.read_text(encoding="utf-8"))
        masks = {
            obj["obj_id"]: np.stack(
                [np.asarray(Image.open(folder / "masks" / str(obj["obj_id"]) / f"{n}.png")) > 0 for n in meta["frames"]]
            )
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


def plot_learning_curves(run_dir: Path, target: Path) -> Path:
    """Training loss (per step, smoothed) and held-out J&F at each validation of the run, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = np.array([record["step"] for record in records])
    losses = np.array([record["loss"] for record in records])
    window = max(1, len(losses) // 50)
    smoothed = np.convolve(losses, np.ones(window) / window, mode="valid")
    validations = sorted(
        (int(path.parent.name.split("_")[-1]), json.loads(path.read_text())["score"]["overall"]["JF"])
        for path in (run_dir / "validation").glob("*/results.json")
    )
    figure, loss_axis = plt.subplots(figsize=(8, 4.5))
    loss_axis.plot(steps[window - 1 :], smoothed, color="tab:blue", label=f"training loss ({window}-step mean)")
    loss_axis.set_xlabel("step")
    # The loss weights of the run's model config: the curve is their weighted sum.
    model_config = json.loads((run_dir / "model" / "config.json").read_text())
    weights = " + ".join(f"{model_config[f'{name}_loss_weight']:g} {name.upper()}" for name in ("ce", "bce", "dice"))
    loss_axis.set_ylabel(f"loss ({weights})", color="tab:blue")
    jf_axis = loss_axis.twinx()
    if validations:
        jf_axis.plot(*zip(*validations), "o-", color="tab:red", label="held-out J&F")
    jf_axis.set_ylabel("held-out J&F", color="tab:red")
    jf_axis.set_ylim(0, 1)
    figure.suptitle("builtin:synthetic, trained from scratch on one CPU core")
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
    if args.run_dir is not None:
        print(f"learning curves: {plot_learning_curves(args.run_dir, args.out / 'learning_curves.png')}")
    jf = {name: result["score"]["overall"]["JF"] for name, result in results.items()}
    print("RATIO " + " ".join(f"jf_{name.replace(':', '_')}={value:.3f}" for name, value in jf.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
