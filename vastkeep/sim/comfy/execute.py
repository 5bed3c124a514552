"""What each simulated node does when it runs: small stand-ins for ComfyUI's tensors, and the files
``SaveImage`` / ``PreviewImage`` write (named like ComfyUI's ``folder_paths.get_save_image_path``).

No timing here: the engine decides how long a node works and when it reports progress.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vastkeep.sim.comfy import png

#: More pixels than this in one batch is the simulated GPU running out of memory.
MAX_PIXELS = 4096 * 4096
OOM = ("torch.OutOfMemoryError", "Allocation on device would exceed allowed memory. (out of memory)")


class NodeFailure(Exception):
    """A node raised while running: becomes ``execution_error`` with this type and message."""

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


@dataclass(frozen=True)
class Img:
    """One picture of an IMAGE batch: its size, and a flat ``color`` (0xRRGGBB) or a gradient ``seed``."""

    width: int
    height: int
    color: int | None = 0
    seed: int = 0

    def png(self) -> bytes:
        if self.color is None:
            return png.gradient(self.width, self.height, self.seed)
        return png.encode_rgb(self.width, self.height, color=self.color)


@dataclass
class Dirs:
    """One ComfyUI's folders (``input``, ``output``, ``temp``)."""

    root: Path

    def of(self, kind: str) -> Path | None:
        return self.root / kind if kind in ("input", "output", "temp") else None

    def input_files(self) -> list[str]:
        """Files under ``input`` as LoadImage lists them (subfolders with ``/``)."""
        base = self.root / "input"
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def _batch(width: int, height: int, count: int, color: int | None = 0, seed: int = 0) -> list[Img]:
    if width * height * count > MAX_PIXELS:
        raise NodeFailure(*OOM)
    return [Img(width, height, color, seed) for _ in range(count)]


def _save(images: list[Img], prefix: str, folder: Path, kind: str) -> list[dict[str, str]]:
    """Write ``<prefix>_00001_.png`` and on, after the highest counter already there (ComfyUI's numbering)."""
    norm = os.path.normpath(prefix)
    subfolder, name = os.path.dirname(norm), os.path.basename(norm)
    target = (folder / subfolder).resolve()
    if os.path.commonpath((str(folder.resolve()), str(target))) != str(folder.resolve()):
        raise NodeFailure(
            "Exception",
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {target}\n         output_dir: {folder}",
        )
    target.mkdir(parents=True, exist_ok=True)
    counter = 1
    for existing in os.listdir(target):
        head, rest = existing[: len(name) + 1], existing[len(name) + 1 :]
        if head == name + "_" and rest.split("_")[0].isdigit():
            counter = max(counter, int(rest.split("_")[0]) + 1)
    results = []
    for img in images:
        filename = f"{name}_{counter:05}_.png"
        (target / filename).write_bytes(img.png())
        results.append({"filename": filename, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


def run_node(
    class_type: str, args: dict[str, Any], dirs: Dirs, rng: random.Random
) -> tuple[tuple[object, ...], dict[str, object] | None]:
    """(outputs, ui) of one node given its resolved inputs; raises :class:`NodeFailure` like a node would."""
    if class_type == "EmptyImage":
        return (_batch(args["width"], args["height"], args["batch_size"], color=args["color"]),), None
    if class_type == "LoadImage":
        path = dirs.root / "input" / str(args["image"])
        size = png.size_of(path.read_bytes()) if path.is_file() else None
        if size is None:
            raise NodeFailure("PIL.UnidentifiedImageError", f"cannot identify image file '{path}'")
        color = sum(path.read_bytes()[-64:]) * 2654435761 & 0xFFFFFF
        return (_batch(*size, 1, color=color), "MASK"), None
    if class_type == "ImageInvert":
        return (
            [
                replace(i, color=None if i.color is None else i.color ^ 0xFFFFFF, seed=i.seed ^ 0xFF)
                for i in args["image"]
            ],
        ), None
    if class_type == "ImageScale":
        out = []
        for i in args["image"]:
            w, h = args["width"], args["height"]
            if w == 0 and h == 0:
                w, h = i.width, i.height
            elif w == 0:
                w = max(1, round(i.width * h / i.height))
            elif h == 0:
                h = max(1, round(i.height * w / i.width))
            out.extend(_batch(w, h, 1, color=i.color, seed=i.seed))
        return (out,), None
    if class_type == "SaveImage":
        return (), {
            "images": _save(args["images"], str(args["filename_prefix"]), dirs.root / "output", "output")
        }
    if class_type == "PreviewImage":
        suffix = "".join(rng.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        return (), {"images": _save(args["images"], "ComfyUI_temp_" + suffix, dirs.root / "temp", "temp")}
    if class_type == "CheckpointLoaderSimple":
        return ("MODEL", "CLIP", "VAE"), None
    if class_type == "CLIPTextEncode":
        return ({"text": args["text"]},), None
    if class_type == "EmptyLatentImage":
        if args["width"] * args["height"] * args["batch_size"] > MAX_PIXELS:
            raise NodeFailure(*OOM)
        return (
            {"width": args["width"], "height": args["height"], "batch": args["batch_size"], "seed": 0},
        ), None
    if class_type == "KSampler":
        return ({**args["latent_image"], "seed": args["seed"]},), None
    if class_type == "VAEDecode":
        lat = args["samples"]
        return (_batch(lat["width"], lat["height"], lat["batch"], color=None, seed=lat["seed"]),), None
    raise NodeFailure("KeyError", repr(class_type))
