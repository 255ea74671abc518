"""VideoLISA web demo: ``python demo/app.py [--model ID_OR_DIR] [--host 127.0.0.1] [--port 7860] [--device auto]``.

Loads the model once, builds the page (videolisa.demo.build_demo) and serves it on the local machine only,
unless ``--host 0.0.0.0`` is given; then give it a login with ``--auth USER:PASSWORD`` or, keeping the password
out of the process list, the ``VIDEOLISA_DEMO_AUTH=USER:PASSWORD`` environment variable.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from videolisa.cli import reports_errors
from videolisa.commands.infer import DEFAULT_MODEL
from videolisa.commands.refine_options import add_refine_arguments, refine_settings_from_args
from videolisa.demo import AUTH_ENV, DEFAULT_HOST, DEFAULT_PORT, DemoLimits, build_demo, launch_demo, parse_auth

SHIPPED_EXAMPLES = Path(__file__).resolve().parent / "examples"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of the demo."""
    limits = DemoLimits()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model directory, Hugging Face id or builtin:NAME (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 for the network)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--auth",
        default=None,
        metavar="USER:PASSWORD",
        help=f"require this login on the page (default: the {AUTH_ENV} environment variable, which "
        "keeps the password out of the process list; none if unset)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: CUDA if available)")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="auto: bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument(
        "--examples",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="extra folder of example videos with <name>.json instruction sidecars (repeatable)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=limits.max_upload_mb,
        help=f"largest upload in MB (default {limits.max_upload_mb:g})",
    )
    parser.add_argument(
        "--max-video-seconds",
        type=float,
        default=limits.max_video_seconds,
        help=f"longest video in seconds (default {limits.max_video_seconds:g})",
    )
    parser.add_argument(
        "--max-frames", type=int, default=limits.max_frames, help=f"most frames per video (default {limits.max_frames})"
    )
    parser.add_argument(
        "--max-frame-megapixels",
        type=float,
        default=limits.max_frame_megapixels,
        help=f"largest frame in megapixels (default {limits.max_frame_megapixels:g}: 4096x2160 fits)",
    )
    parser.add_argument(
        "--max-video-megapixels",
        type=float,
        default=limits.max_video_megapixels,
        help=f"most megapixels of all frames together (default {limits.max_video_megapixels:g})",
    )
    parser.add_argument(
        "--max-request-seconds",
        type=float,
        default=limits.max_request_seconds,
        help=f"a request still running after this long is stopped (default {limits.max_request_seconds:g})",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=limits.max_queue_size,
        help=f"requests waiting in line at most (default {limits.max_queue_size})",
    )
    add_refine_arguments(parser)  # --refine sam2: the page offers a "Refine with SAM 2" switch
    return parser.parse_args(argv)


@reports_errors
def main(argv: list[str] | None = None) -> int:
    """Load the model, build the page, serve it until interrupted (Ctrl-C or SIGTERM)."""
    from videolisa.predictor import VideoLisaPredictor

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    login = args.auth if args.auth is not None else os.environ.get(AUTH_ENV)
    auth = parse_auth(login) if login is not None else None
    limits = DemoLimits(
        max_upload_mb=args.max_upload_mb,
        max_video_seconds=args.max_video_seconds,
        max_frames=args.max_frames,
        max_frame_megapixels=args.max_frame_megapixels,
        max_video_megapixels=args.max_video_megapixels,
        max_request_seconds=args.max_request_seconds,
        max_queue_size=args.max_queue,
    )
    predictor = VideoLisaPredictor.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, refine=refine_settings_from_args(args)
    )
    demo = build_demo(
        predictor, examples_dirs=[SHIPPED_EXAMPLES, *args.examples], limits=limits, model_name=str(args.model)
    )
    launch_demo(demo, limits=limits, host=args.host, port=args.port, auth=auth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
