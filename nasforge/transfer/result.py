"""A transferred model's ``result.json``: written by the Ray Train worker (rank 0) when the model
has finished, read by the driver for the comparison table and to skip finished models."""
from __future__ import annotations

import json
import os
from pathlib import Path

from nasforge.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from nasforge.train.recipes import Recipe
from nasforge.trials import Status

RESULT = "result.json"


def finish_model(entry: dict, model_dir: Path) -> dict:
    """``result.json`` from the model's final checkpoint (rank 0, after training)."""
    state = load_checkpoint(model_dir / CHECKPOINT_NAME)
    history = state.get("history", [])
    last = history[-1] if history else {}
    spec, info = entry["spec"], entry["info"]
    recipe = Recipe.from_dict(entry["recipe"])  # a plan written before the groups is flat
    train_s = float(state.get("train_s") or 0.0)
    result = {
        "model": spec["label"], "kind": spec["kind"], "ref": spec["ref"],
        "setting": spec["setting"], "image_size": recipe.augmentation.image_size,
        "params": info["params"], "mult_adds": info["mult_adds"],
        "top1": last.get("val_acc"), "top5": last.get("val_top5"),
        "train_images_per_s": (state.get("train_images", 0) / train_s) if train_s else None,
        "wall_s": float(state.get("wall_s") or 0.0), "epochs": int(state.get("epoch", 0)),
        "status": state.get("status", Status.OK.value), "recipe": recipe.name,
        "world_size": state.get("world_size"),
    }
    if "N" in info:
        result["N@P"] = f"{info['N']}@{info['penultimate']}"
    tmp = model_dir / f".{RESULT}.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, model_dir / RESULT)
    return result
