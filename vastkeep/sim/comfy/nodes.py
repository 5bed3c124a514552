"""The core nodes the simulated ComfyUI serves, with ComfyUI's own input specs (``INPUT_TYPES``), return
types and ``/object_info`` shape, so a client can build, validate and run real API-format graphs without
models or a GPU.

Two families: the image nodes (``EmptyImage`` → ``ImageInvert`` / ``ImageScale`` → ``SaveImage`` /
``PreviewImage``, ``LoadImage`` for uploads) and the default text-to-image graph (``CheckpointLoaderSimple``,
``CLIPTextEncode``, ``EmptyLatentImage``, ``KSampler`` — which reports ``progress`` and sends previews —,
``VAEDecode``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_RESOLUTION = 16384
CHECKPOINTS = ["v1-5-pruned-emaonly-fp16.safetensors"]
SAMPLERS = [
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2m",
    "dpmpp_sde",
    "ddim",
    "uni_pc",
]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal"]
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


def _int(default: int, lo: int, hi: int, step: int | None = None, **extra: Any) -> tuple[str, dict[str, Any]]:
    """An INT spec; ``step`` only where ComfyUI's node declares one."""
    spec: dict[str, Any] = {"default": default, "min": lo, "max": hi}
    if step is not None:
        spec["step"] = step
    return ("INT", {**spec, **extra})


def _size(default: int = 512, lo: int = 1, step: int = 1) -> tuple[str, dict[str, Any]]:
    return _int(default, lo, MAX_RESOLUTION, step)


@dataclass(frozen=True)
class NodeClass:
    """One node class: its spec as ComfyUI's ``nodes.py`` declares it."""

    name: str
    inputs: Callable[[list[str]], dict[str, dict[str, Any]]]  # input files → INPUT_TYPES()
    return_types: tuple[str, ...]
    category: str
    display_name: str
    description: str = ""
    output_node: bool = False
    return_names: tuple[str, ...] | None = None

    def input_types(self, input_files: list[str]) -> dict[str, dict[str, Any]]:
        return self.inputs(input_files)

    def object_info(self, input_files: list[str]) -> dict[str, object]:
        """``/object_info``'s entry, in the order and with the fields ComfyUI's ``node_info`` builds."""
        spec = self.input_types(input_files)
        return {
            "input": spec,
            "input_order": {kind: list(fields) for kind, fields in spec.items()},
            "output": list(self.return_types),
            "output_is_list": [False] * len(self.return_types),
            "output_name": list(self.return_names or self.return_types),
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": "nodes",
            "category": self.category,
            "output_node": self.output_node,
        }


_HIDDEN_SAVE = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

NODES: dict[str, NodeClass] = {
    n.name: n
    for n in (
        NodeClass(
            "EmptyImage",
            lambda files: {
                "required": {
                    "width": _size(),
                    "height": _size(),
                    "batch_size": _int(1, 1, 4096),
                    "color": _int(0, 0, 0xFFFFFF, 1, display="color"),
                }
            },
            ("IMAGE",),
            "image",
            "EmptyImage",
        ),
        NodeClass(
            "LoadImage",
            lambda files: {"required": {"image": (sorted(files), {"image_upload": True})}},
            ("IMAGE", "MASK"),
            "image",
            "Load Image",
        ),
        NodeClass(
            "ImageInvert",
            lambda files: {"required": {"image": ("IMAGE",)}},
            ("IMAGE",),
            "image",
            "Invert Image",
        ),
        NodeClass(
            "ImageScale",
            lambda files: {
                "required": {
                    "image": ("IMAGE",),
                    "upscale_method": (UPSCALE_METHODS,),
                    "width": _int(512, 0, MAX_RESOLUTION, 1),
                    "height": _int(512, 0, MAX_RESOLUTION, 1),
                    "crop": (["disabled", "center"],),
                }
            },
            ("IMAGE",),
            "image/upscaling",
            "Upscale Image",
        ),
        NodeClass(
            "SaveImage",
            lambda files: {
                "required": {
                    "images": ("IMAGE", {"tooltip": "The images to save."}),
                    "filename_prefix": (
                        "STRING",
                        {
                            "default": "ComfyUI",
                            "tooltip": "The prefix for the file to save. "
                            "This may include formatting information such as %date:yyyy-MM-dd% "
                            "or %Empty Latent Image.width% to include values from nodes.",
                        },
                    ),
                },
                "hidden": dict(_HIDDEN_SAVE),
            },
            (),
            "image",
            "Save Image",
            "Saves the input images to your ComfyUI output directory.",
            True,
        ),
        NodeClass(
            "PreviewImage",
            lambda files: {"required": {"images": ("IMAGE",)}, "hidden": dict(_HIDDEN_SAVE)},
            (),
            "image",
            "Preview Image",
            "Saves the input images to your ComfyUI output directory.",
            True,
        ),
        NodeClass(
            "CheckpointLoaderSimple",
            lambda files: {
                "required": {
                    "ckpt_name": (
                        list(CHECKPOINTS),
                        {"tooltip": "The name of the checkpoint (model) to load."},
                    )
                }
            },
            ("MODEL", "CLIP", "VAE"),
            "loaders",
            "Load Checkpoint",
            "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
        ),
        NodeClass(
            "CLIPTextEncode",
            lambda files: {
                "required": {
                    "text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                    "clip": ("CLIP",),
                }
            },
            ("CONDITIONING",),
            "conditioning",
            "CLIP Text Encode (Prompt)",
        ),
        NodeClass(
            "EmptyLatentImage",
            lambda files: {
                "required": {
                    "width": _size(512, 16, 8),
                    "height": _size(512, 16, 8),
                    "batch_size": _int(1, 1, 4096),
                }
            },
            ("LATENT",),
            "latent",
            "Empty Latent Image",
        ),
        NodeClass(
            "KSampler",
            lambda files: {
                "required": {
                    "model": ("MODEL",),
                    "seed": _int(0, 0, 0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                    "steps": _int(20, 1, 10000),
                    "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
                    "sampler_name": (list(SAMPLERS),),
                    "scheduler": (list(SCHEDULERS),),
                    "positive": ("CONDITIONING",),
                    "negative": ("CONDITIONING",),
                    "latent_image": ("LATENT",),
                    "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                }
            },
            ("LATENT",),
            "sampling",
            "KSampler",
            "Uses the provided model, positive and negative conditioning to denoise the latent image.",
        ),
        NodeClass(
            "VAEDecode",
            lambda files: {"required": {"samples": ("LATENT",), "vae": ("VAE",)}},
            ("IMAGE",),
            "latent",
            "VAE Decode",
        ),
    )
}


def object_info(input_files: list[str], name: str | None = None) -> dict[str, object]:
    """``GET /object_info`` (every node) or ``/object_info/{name}`` (one node, ``{}`` when unknown)."""
    if name is not None:
        node = NODES.get(name)
        return {name: node.object_info(input_files)} if node else {}
    return {n: node.object_info(input_files) for n, node in NODES.items()}
