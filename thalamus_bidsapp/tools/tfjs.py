"""A reader of TensorFlow.js *layers* models (Keras topology + weights manifest) into PyTorch.

No TensorFlow needed: ``model.json`` holds the Keras topology and the weights
manifest, the weight files (e.g. ``model.bin``) hold little-endian float32
arrays in manifest order. Supports the layers brainchop's MeshNet models use
(``InputLayer``, ``Conv3D`` with ``same`` padding and dilation, activations).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from thalamus_bidsapp.errors import EXIT_DATAERR, ThalamusError

logger = logging.getLogger(__name__)


_ACTIVATIONS = {
    "linear": None,
    "elu": "elu",
    "relu": "relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "softmax": "softmax",
}


def _apply_activation(x: torch.Tensor, name: str | None) -> torch.Tensor:
    if name is None:
        return x
    if name == "elu":
        # In place: the pre-activation is never needed again, and it halves peak memory.
        return F.elu(x, inplace=True)
    if name == "relu":
        return F.relu(x, inplace=True)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "softmax":
        return torch.softmax(x, dim=1)
    raise AssertionError(name)


class _Activation(nn.Module):
    def __init__(self, name: str | None) -> None:
        super().__init__()
        self.name_ = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _apply_activation(x, self.name_)

    def extra_repr(self) -> str:
        return str(self.name_)


class _Conv3dSame(nn.Module):
    """Keras ``Conv3D`` (stride 1) with ``padding='same'`` or ``'valid'``, and its activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        dilation: Sequence[int],
        padding: str,
        use_bias: bool,
        activation: str | None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, tuple(kernel_size), dilation=tuple(dilation), bias=use_bias, padding=0
        )
        # Keras 'same' with stride 1 pads (k-1)*d in total, the extra voxel (even kernels) after.
        if padding == "same":
            total = [(k - 1) * d for k, d in zip(kernel_size, dilation)]
            before = [t // 2 for t in total]
            after = [t - b for t, b in zip(total, before)]
        else:
            before = after = [0, 0, 0]
        self.symmetric = before == after
        if self.symmetric:
            self.conv.padding = tuple(before)
            self.pad = None
        else:
            # F.pad takes the last axis first.
            self.pad = (before[2], after[2], before[1], after[1], before[0], after[0])
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return _apply_activation(self.conv(x), self.activation)


class TfjsLayersNet(nn.Module):
    """A chain of Conv3D/activation layers read from a TensorFlow.js layers model.

    Input: float32 tensor (N, 1, D, H, W), channels first (torch layout);
    output: (N, n_classes, D, H, W) logits of the last layer.
    """

    def __init__(self, layers: Sequence[nn.Module], n_classes: int, layer_names: Sequence[str]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.n_classes = n_classes
        self.layer_names = list(layer_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _layer_list(topology: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers of a Keras model config in execution order; only simple chains are supported."""
    model_config = topology.get("model_config", topology)
    config = model_config.get("config", model_config)
    layers = config["layers"] if isinstance(config, dict) else config
    if model_config.get("class_name") == "Sequential":
        return list(layers)
    # Functional: follow inbound_nodes from the input; each layer must feed exactly the next.
    ordered: list[dict[str, Any]] = []
    previous: str | None = None
    for layer in layers:
        inbound = layer.get("inbound_nodes") or []
        sources = [node[0] for group in inbound for node in group] if inbound else []
        if previous is not None and sources != [previous]:
            raise ThalamusError(
                f"unsupported model graph: layer {layer.get('name')!r} takes {sources}, expected [{previous!r}] "
                "(only chains of layers are supported)",
                EXIT_DATAERR,
            )
        ordered.append(layer)
        previous = layer.get("name", layer["config"].get("name"))
    return ordered


def _read_weights(model_dir: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Weights of a layers model by name, float32, in the manifest's (Keras) shapes."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        blob = b"".join((model_dir / path).read_bytes() for path in group["paths"])
        offset = 0
        for entry in group["weights"]:
            if entry.get("dtype", "float32") != "float32" or "quantization" in entry:
                raise ThalamusError(
                    f"unsupported weight {entry['name']!r} in {model_dir}: dtype {entry.get('dtype')}, "
                    f"quantization {entry.get('quantization')} (only plain float32 is supported)",
                    EXIT_DATAERR,
                )
            count = int(np.prod(entry["shape"], dtype=np.int64))
            nbytes = 4 * count
            if offset + nbytes > len(blob):
                raise ThalamusError(
                    f"weights file(s) {group['paths']} in {model_dir} too short for {entry['name']!r}", EXIT_DATAERR
                )
            array = np.frombuffer(blob, dtype="<f4", count=count, offset=offset).reshape(entry["shape"])
            weights[entry["name"]] = array.astype(np.float32)
            offset += nbytes
        if offset != len(blob):
            raise ThalamusError(
                f"weights file(s) {group['paths']} in {model_dir}: {len(blob) - offset} bytes left over", EXIT_DATAERR
            )
    return weights


def load_tfjs_layers_model(model_dir: Path) -> TfjsLayersNet:
    """Read a TensorFlow.js layers model (Conv3D/Activation chain) into PyTorch.

    No checksum is checked here (see :func:`verify_model_dir`), so the same
    reader serves other MeshNet models and hand-made test networks.

    Parameters
    ----------
    model_dir
        Folder with ``model.json`` (``modelTopology`` + ``weightsManifest``) and the
        weight files it lists.

    Returns
    -------
    TfjsLayersNet
        In eval mode, float32, gradients off. Keras kernels (kD, kH, kW, in, out)
        are stored as torch's (out, in, kD, kH, kW); the spatial axes keep their order.

    Raises
    ------
    ThalamusError
        For layers, options or weight formats the reader does not support.
    """
    model_dir = Path(model_dir)
    spec_json = json.loads((model_dir / "model.json").read_text("utf-8"))
    if spec_json.get("format", "layers-model") != "layers-model":
        raise ThalamusError(f"{model_dir / 'model.json'}: format {spec_json['format']!r} is not 'layers-model'")
    weights = _read_weights(model_dir, spec_json["weightsManifest"])
    modules: list[nn.Module] = []
    names: list[str] = []
    channels: int | None = None
    for layer in _layer_list(spec_json["modelTopology"]):
        kind = layer["class_name"]
        cfg = layer["config"]
        name = cfg.get("name", layer.get("name"))
        if kind == "InputLayer":
            shape = cfg.get("batch_input_shape") or cfg.get("batchInputShape")
            channels = int(shape[-1]) if shape and shape[-1] is not None else None
            continue
        if kind == "Conv3D":
            if cfg.get("data_format", "channels_last") != "channels_last":
                raise ThalamusError(f"layer {name!r}: only channels_last Conv3D is supported", EXIT_DATAERR)
            if any(int(s) != 1 for s in cfg.get("strides", [1, 1, 1])):
                raise ThalamusError(f"layer {name!r}: strides {cfg['strides']} not supported", EXIT_DATAERR)
            if cfg.get("padding", "valid") not in ("same", "valid"):
                raise ThalamusError(f"layer {name!r}: padding {cfg['padding']!r} not supported", EXIT_DATAERR)
            if int(cfg.get("groups", 1)) != 1:
                raise ThalamusError(f"layer {name!r}: grouped convolution not supported", EXIT_DATAERR)
            activation = cfg.get("activation", "linear")
            if activation not in _ACTIVATIONS:
                raise ThalamusError(f"layer {name!r}: activation {activation!r} not supported", EXIT_DATAERR)
            kernel = weights[f"{name}/kernel"]  # (kD, kH, kW, in, out)
            dilation = cfg.get("dilation_rate", [1, 1, 1])
            if isinstance(dilation, int):
                dilation = [dilation] * 3
            module = _Conv3dSame(
                in_channels=kernel.shape[3],
                out_channels=kernel.shape[4],
                kernel_size=[int(k) for k in kernel.shape[:3]],
                dilation=[int(d) for d in dilation],
                padding=cfg.get("padding", "valid"),
                use_bias=bool(cfg.get("use_bias", True)),
                activation=_ACTIVATIONS[activation],
            )
            if list(kernel.shape[:3]) != [int(k) for k in cfg["kernel_size"]] or kernel.shape[4] != int(cfg["filters"]):
                raise ThalamusError(f"layer {name!r}: kernel shape {kernel.shape} does not match its config")
            if channels is not None and kernel.shape[3] != channels:
                raise ThalamusError(
                    f"layer {name!r}: kernel expects {kernel.shape[3]} input channels, got {channels}", EXIT_DATAERR
                )
            module.conv.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)))
            if module.conv.bias is not None:
                module.conv.bias.data = torch.from_numpy(weights[f"{name}/bias"].copy())
            channels = int(kernel.shape[4])
        elif kind == "Activation":
            activation = cfg["activation"]
            if activation not in _ACTIVATIONS:
                raise ThalamusError(f"layer {name!r}: activation {activation!r} not supported", EXIT_DATAERR)
            module = _Activation(_ACTIVATIONS[activation])
        elif kind == "ELU" and float(cfg.get("alpha", 1.0)) == 1.0:
            module = _Activation("elu")
        elif kind in ("Dropout", "SpatialDropout3D"):
            continue  # identity at inference
        else:
            raise ThalamusError(f"layer {name!r} of type {kind} is not supported by the TF.js layers reader", EXIT_DATAERR)
        modules.append(module)
        names.append(name)
    if channels is None:
        raise ThalamusError(f"{model_dir / 'model.json'} has no convolution layers", EXIT_DATAERR)
    net = TfjsLayersNet(modules, channels, names)
    net = net.to(memory_format=torch.channels_last_3d)
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net
