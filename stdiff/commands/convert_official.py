"""``stdiff convert-official SRC DST``: a checkpoint of the official STDiff code -> an stdiff checkpoint folder."""
from __future__ import annotations

import argparse
import dataclasses

HELP = "convert a checkpoint of the official STDiff code into an stdiff checkpoint folder"


def build(parser: argparse.ArgumentParser) -> None:
    from ..config import preset_names

    parser.add_argument("src", help="official exported pipeline folder, its stdiff/ sub-folder, a unet_ema/ or "
                                    "unet/ folder of a training checkpoint, or a raw state dict "
                                    "(.safetensors, .bin, .pt, .pth)")
    parser.add_argument("dst", help="output folder (config.json + model.safetensors), written atomically; it must "
                                    "not exist (or be empty), or be an stdiff checkpoint folder and --overwrite given")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DST when it is an existing stdiff checkpoint folder (never any other folder)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow full unpickling of a .bin/.pt/.pth that holds more than tensors "
                             "(can run arbitrary code: only for files you trust)")
    parser.add_argument("--preset", choices=preset_names(), metavar="NAME",
                        help="model config for a raw state dict without the official config.json "
                             f"({', '.join(preset_names())}); with a config.json it must describe the same model "
                             "and sets the clip lengths")
    parser.add_argument("--num-observed", type=int, metavar="TO",
                        help="observed frames of the training clips (the official Dataset.num_observed_frames)")
    parser.add_argument("--num-future", type=int, metavar="TP",
                        help="predicted frames of the training clips (the official Dataset.num_predict_frames)")


def check_destination(dst: str, overwrite: bool) -> None:
    """Raise ValueError unless writing ``dst`` loses nothing: absent, an empty folder, or (with
    ``overwrite``) an stdiff checkpoint folder."""
    from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME, is_pretrained_dir
    from ..fileio import check_output_dir

    path = check_output_dir(dst, "DST")
    if not path.exists() or not any(path.iterdir()):
        return
    others = sorted(p.name for p in path.iterdir() if p.name not in (CONFIG_NAME, WEIGHTS_NAME))
    if not is_pretrained_dir(path) or others:
        raise ValueError(f"DST {dst!r} exists and is not an stdiff checkpoint folder (it holds "
                         f"{', '.join(others[:5]) or 'other files'}): refusing to replace it (choose a new folder)")
    if not overwrite:
        raise ValueError(f"DST {dst!r} already holds an stdiff checkpoint: pass --overwrite to replace it")


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import save_pretrained
    from ..config import preset
    from ..official.load import locate_official, model_from_official_state, read_state_dict, resolve_config

    check_destination(args.dst, args.overwrite)
    files = locate_official(args.src)
    config = resolve_config(files, preset(args.preset) if args.preset else None)
    clip = {}
    if args.num_observed is not None:
        clip["num_observed"] = args.num_observed
    if args.num_future is not None:
        clip["num_future"] = args.num_future
        clip["train_future_k"] = min(config.train_future_k, args.num_future)
    if clip:
        config = dataclasses.replace(config, **clip).validate()
    model = model_from_official_state(read_state_dict(files.weights, args.trust_pickle), config)
    source = {"weights": str(files.weights.resolve()),
              "config": None if files.config is None else str(files.config.resolve()),
              "scheduler_config": None if files.scheduler_config is None else str(files.scheduler_config.resolve()),
              "preset": args.preset}
    save_pretrained(model, args.dst, extra={"converted_from_official": source})
    n_params = sum(p.numel() for p in model.parameters())
    print(f"read   {files.weights}")
    print(f"config {files.config if files.config is not None else 'preset ' + args.preset}")
    print(f"wrote  {args.dst}: {n_params:,} parameters, {config.image_size} px, {config.channels} channel(s), "
          f"To={config.num_observed}, Tp={config.num_future}, SDE {config.sde.method} dt={config.sde.dt}")
    return 0
