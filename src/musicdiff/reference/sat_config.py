"""Map a stable-audio-tools ``model_config.json`` to musicdiff's config groups, and back.

A Stable Audio Open 1.0 release holds ``model.safetensors`` (or ``model.ckpt``) and a
``model_config.json`` in stable-audio-tools' (SAT) format: ``model.pretransform`` (the Oobleck
VAE), ``model.conditioning`` (T5 prompt + two number conditioners) and ``model.diffusion``
(the DiT plus the routing of conditioners to cross-attention / global conditioning).
:func:`sat_to_musicdiff` turns it into the ``autoencoder``, ``dit`` and ``conditioner`` groups
that ``hydra.utils.instantiate`` builds (the same nodes as ``conf/autoencoder/oobleck_sa2.yaml``,
``conf/dit/sa2.yaml`` and ``conf/conditioner/t5_timing.yaml``), and :func:`musicdiff_to_sat`
goes back. Only what musicdiff implements is accepted: a setting with no counterpart (patching,
adaLN, input-concat conditioning, CLAP checkpoints of laion_clap ...) raises
:class:`UnsupportedSATConfig` instead of silently building a different network.

Defaults follow SAT's constructors (e.g. ``OobleckDecoder.final_tanh = True``, DiT
``embed_dim = 768``), and the rotary width is SAT's ``max(head_dim // 2, 32)``.

The training objective (``model.diffusion.diffusion_objective``: ``v`` for Stable Audio Open 1.0,
``rectified_flow`` / ``rf_denoiser`` for Stable Audio Open Small, arXiv 2505.08175 §2) becomes the
``diffusion`` group (the nodes of ``conf/diffusion/v_objective.yaml`` / ``rectified_flow.yaml``),
with SAT's length-dependent ``distribution_shift_options`` as its ``time_shift`` and the
``training.timestep_sampler`` of the file as its timestep density; the generator and the training
task read the objective from there.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

T5_ENV = "MUSICDIFF_T5_PATH"
# SAT's T5 names that moved on the Hugging Face hub (musicdiff only reads local copies/cache).
_HUB_T5 = {"t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b"}
_SAT_T5_NAMES = sorted(_HUB_T5) + [f"google/{n}" for n in (
    "flan-t5-small", "flan-t5-base", "flan-t5-large", "flan-t5-3b", "flan-t5-11b", "flan-t5-xl", "flan-t5-xxl")]
_TIMESTEP_FEATURES = 256  # SAT's DiffusionTransformer hard-codes 256 Fourier features
_NUMBER_FOURIER = 256  # SAT's NumberEmbedder default


_ANY = object()  # "any value" in the allowed-keys tables below
_QK_NORMS = ("none", "ln")  # SAT's attn_kwargs.qk_norm values musicdiff's Attention implements


class UnsupportedSATConfig(ValueError):
    """The SAT config uses a feature musicdiff does not implement."""


def window_seconds(sample_size: int, ratio: int, sample_rate: int) -> float:
    """``sample_size / sample_rate`` nudged down by a few ulps so that the ``ceil(s · rate / ratio)``
    of ``musicdiff-generate`` gives exactly ``ceil(sample_size / ratio)`` latents again."""
    latents = -(-int(sample_size) // int(ratio))
    seconds = latents * ratio / sample_rate
    while math.ceil(seconds * sample_rate / ratio) > latents:
        seconds = math.nextafter(seconds, 0.0)
    return seconds


def _check_allowed(section: str, cfg: Mapping[str, Any], allowed: Mapping[str, Any]) -> None:
    """Raise unless every key of ``cfg`` is known and equals the SAT default where it must."""
    for key, value in cfg.items():
        if key not in allowed:
            raise UnsupportedSATConfig(f"{section}.{key}={value!r} has no musicdiff counterpart")
        required = allowed[key]
        if required is not _ANY and value != required:
            raise UnsupportedSATConfig(f"{section}.{key}={value!r} is not supported (musicdiff implements "
                                       f"{required!r})")



def t5_model_name(sat_name: str, t5_path: str | None = None) -> str:
    """The ``model_name`` of musicdiff's T5Conditioner for SAT's ``t5_model_name``.

    Args:
        sat_name: SAT's name (``t5-base``, ``google/flan-t5-large`` ...).
        t5_path: a local directory to use instead (written into the config as is).

    Returns:
        ``t5_path`` if given, else ``${oc.env:MUSICDIFF_T5_PATH,<hub id>}`` (escaped so that it
        survives a resolving save and is resolved when the model is built): the encoder is read
        from that environment variable or, failing that, from the local Hugging Face cache.
    """
    if t5_path:
        return str(t5_path)
    hub_id = f"google-t5/{sat_name}" if sat_name in _HUB_T5 else sat_name
    return "\\${oc.env:" + T5_ENV + "," + hub_id + "}"


def _oobleck(section: str, cfg: Mapping[str, Any], encoder: bool) -> dict[str, Any]:
    allowed = {"channels": _ANY, "latent_dim": _ANY, "c_mults": _ANY, "strides": _ANY, "use_snake": _ANY,
               "antialias_activation": False}
    allowed.update({"in_channels": _ANY} if encoder else {"out_channels": _ANY, "final_tanh": _ANY,
                                                         "use_nearest_upsample": _ANY})
    _check_allowed(section, cfg, allowed)
    node = {
        "_target_": f"musicdiff.models.autoencoder.{'OobleckEncoder' if encoder else 'OobleckDecoder'}",
        ("in_channels" if encoder else "out_channels"): int(cfg.get("in_channels" if encoder else "out_channels", 2)),
        "channels": int(cfg.get("channels", 128)),
        "c_mults": [int(c) for c in cfg.get("c_mults", [1, 2, 4, 8])],
        "strides": [int(s) for s in cfg.get("strides", [2, 4, 8, 8])],
        "latent_dim": int(cfg.get("latent_dim", 32)),
        "use_snake": bool(cfg.get("use_snake", False)),
        "checkpointing": False,
    }
    if not encoder:
        node["final_tanh"] = bool(cfg.get("final_tanh", True))
        if cfg.get("use_nearest_upsample", False):  # written only when set (SAO and SA2 use transposed convs)
            node["use_nearest_upsample"] = True
    return node


def autoencoder_config(pretransform: Mapping[str, Any], sample_rate: int) -> dict[str, Any]:
    """musicdiff ``autoencoder`` group for SAT's ``model.pretransform`` (an Oobleck VAE)."""
    _check_allowed("pretransform", pretransform, {"type": "autoencoder", "config": _ANY, "scale": 1.0,
                                                  "iterate_batch": _ANY, "model_half": _ANY, "chunked": _ANY})
    ae = pretransform["config"]
    _check_allowed("pretransform.config", ae, {"encoder": _ANY, "decoder": _ANY, "bottleneck": _ANY,
                                               "latent_dim": _ANY, "downsampling_ratio": _ANY, "io_channels": _ANY})
    for part in ("encoder", "decoder"):
        if ae[part].get("type") != "oobleck":
            raise UnsupportedSATConfig(f"pretransform.config.{part}.type={ae[part].get('type')!r}: only 'oobleck'")
        _check_allowed(f"pretransform.config.{part}", ae[part], {"type": _ANY, "config": _ANY, "requires_grad": _ANY})
    bottleneck = ae.get("bottleneck")
    if bottleneck is not None and bottleneck.get("type") != "vae":
        raise UnsupportedSATConfig(f"bottleneck type {bottleneck.get('type')!r}: only 'vae' (or none)")
    return {
        "_target_": "musicdiff.models.autoencoder.AudioAutoencoder",
        "sample_rate": int(sample_rate),
        "io_channels": int(ae["io_channels"]),
        "latent_dim": int(ae["latent_dim"]),
        "downsampling_ratio": int(ae["downsampling_ratio"]),
        "encoder": _oobleck("encoder", ae["encoder"].get("config", {}), encoder=True),
        "decoder": _oobleck("decoder", ae["decoder"].get("config", {}), encoder=False),
        "bottleneck": {"_target_": "musicdiff.models.autoencoder.VAEBottleneck"} if bottleneck else None,
    }


def dit_config(diffusion: Mapping[str, Any]) -> dict[str, Any]:
    """musicdiff ``dit`` group for SAT's ``model.diffusion`` (type ``dit``)."""
    _check_allowed("diffusion", diffusion, {"type": "dit", "config": _ANY, "cross_attention_cond_ids": _ANY,
                                            "global_cond_ids": _ANY, "diffusion_objective": _ANY,
                                            "distribution_shift_options": _ANY,
                                            "input_concat_ids": [], "prepend_cond_ids": []})
    objective = diffusion.get("diffusion_objective", "v")
    if objective not in SAT_OBJECTIVES:
        raise UnsupportedSATConfig(f"diffusion.diffusion_objective={objective!r} is not supported (musicdiff "
                                   f"implements {list(SAT_OBJECTIVES)})")
    cfg = diffusion["config"]
    _check_allowed("diffusion.config", cfg, {
        "io_channels": _ANY, "embed_dim": _ANY, "depth": _ANY, "num_heads": _ANY, "cond_token_dim": _ANY,
        "global_cond_dim": _ANY, "project_cond_tokens": _ANY, "project_global_cond": _ANY, "patch_size": 1,
        "input_concat_dim": 0, "prepend_cond_dim": 0, "transformer_type": "continuous_transformer",
        "global_cond_type": "prepend", "timestep_cond_type": "global", "rotary_pos_emb": _ANY,
        "zero_init_branch_outputs": _ANY, "attn_kwargs": _ANY, "ff_kwargs": _ANY})
    # SAT's Attention / FeedForward defaults are what musicdiff's blocks compute, plus the per-head
    # LayerNorm QK normalisation of Stable Audio Open Small; anything else is refused
    attn_kwargs = cfg.get("attn_kwargs") or {}
    _check_allowed("diffusion.config.attn_kwargs", attn_kwargs,
                   {"qk_norm": _ANY, "differential": False, "feat_scale": False})
    qk_norm = attn_kwargs.get("qk_norm", "none")
    if qk_norm not in _QK_NORMS:
        raise UnsupportedSATConfig(f"diffusion.config.attn_kwargs.qk_norm={qk_norm!r} is not supported (musicdiff "
                                   f"implements {list(_QK_NORMS)})")
    _check_allowed("diffusion.config.ff_kwargs", cfg.get("ff_kwargs") or {}, {"mult": 4, "no_bias": False,
                                                                               "glu": True})
    width, heads = int(cfg.get("embed_dim", 768)), int(cfg.get("num_heads", 8))
    rotary = max(width // heads // 2, 32) if cfg.get("rotary_pos_emb", True) else 0
    return {
        "_target_": "musicdiff.models.dit.DiffusionTransformer",
        "io_channels": int(cfg.get("io_channels", 32)),
        "width": width,
        "depth": int(cfg.get("depth", 12)),
        "num_heads": heads,
        "cond_token_dim": int(cfg.get("cond_token_dim", 0)),
        "global_cond_dim": int(cfg.get("global_cond_dim", 0)),
        "project_cond_tokens": bool(cfg.get("project_cond_tokens", True)),
        "project_global_cond": bool(cfg.get("project_global_cond", True)),
        "ff_mult": 4,
        "rotary_dim": rotary,
        "timestep_features_dim": _TIMESTEP_FEATURES,
        "use_cross_attn_mask": False,  # SAT's DiT drops the mask (padding tokens are zeroed instead)
        "qk_norm": qk_norm,
        "gradient_checkpointing": True,  # SAT checkpoints every block while training
    }


# SAT's ``training.timestep_sampler`` names and the musicdiff density each one is.
_SAT_DENSITIES = {
    "uniform": lambda o: {"_target_": "musicdiff.diffusion.UniformTimesteps", "t_min": 0.0, "t_max": 1.0},
    "logit_normal": lambda o: {"_target_": "musicdiff.diffusion.LogitNormalTimesteps", "mean": 0.0, "std": 1.0},
    "trunc_logit_normal": lambda o: {"_target_": "musicdiff.diffusion.TruncatedLogitNormalTimesteps",
                                     "left": 0.075, "right": 1.0, "flip": True},
    "log_snr": lambda o: {"_target_": "musicdiff.diffusion.LogSNRTimesteps",
                          "mean": float(o.get("mean_logsnr", -1.2)), "std": float(o.get("std_logsnr", 2.0))},
}
SAT_OBJECTIVES = ("v", "rectified_flow", "rf_denoiser")
_SHIFT_KEYS = ("base_shift", "max_shift", "min_length", "max_length", "use_sine")


def diffusion_config(diffusion: Mapping[str, Any], training: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """musicdiff ``diffusion`` group (objective, timestep density, time shift) for SAT's ``model.diffusion``.

    Args:
        diffusion: SAT's ``model.diffusion`` (``diffusion_objective``, ``distribution_shift_options``).
        training: SAT's ``training`` section, if the file has one (``timestep_sampler`` and its options;
            SAT's default is ``uniform``).

    Returns:
        A :class:`~musicdiff.diffusion.VObjectiveLoss` node for ``v``, else a
        :class:`~musicdiff.diffusion.RectifiedFlowLoss` node recording the objective name.

    Raises:
        UnsupportedSATConfig: an unknown objective or timestep sampler, or a time shift on the v-objective.
    """
    objective = diffusion.get("diffusion_objective", "v")
    if objective not in SAT_OBJECTIVES:
        raise UnsupportedSATConfig(f"diffusion.diffusion_objective={objective!r} is not supported (musicdiff "
                                   f"implements {list(SAT_OBJECTIVES)})")
    training = training or {}
    sampler = training.get("timestep_sampler", "uniform")
    if sampler not in _SAT_DENSITIES:
        raise UnsupportedSATConfig(f"training.timestep_sampler={sampler!r} is not supported (musicdiff implements "
                                   f"{sorted(_SAT_DENSITIES)})")
    density = _SAT_DENSITIES[sampler](training.get("timestep_sampler_options") or {})
    shift = diffusion.get("distribution_shift_options")
    if objective == "v":
        if shift is not None:
            raise UnsupportedSATConfig("diffusion.distribution_shift_options with the v objective: musicdiff shifts "
                                       "flow times only")
        return {"_target_": "musicdiff.diffusion.VObjectiveLoss", "timestep_density": density}
    time_shift = None
    if shift is not None:
        _check_allowed("diffusion.distribution_shift_options", shift, {k: _ANY for k in _SHIFT_KEYS})
        time_shift = {"_target_": "musicdiff.diffusion.TimeShift", **{k: shift[k] for k in _SHIFT_KEYS if k in shift}}
    return {"_target_": "musicdiff.diffusion.RectifiedFlowLoss", "objective": objective,
            "timestep_density": density, "time_shift": time_shift}


def _sat_diffusion_fields(node: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model.diffusion fields, training fields)`` of SAT's config for a musicdiff ``diffusion`` node."""
    if node is None:
        return {}, {}
    from musicdiff.diffusion.objectives import objective_of

    objective = objective_of(node)
    density = node.get("timestep_density") or {}
    kind = _target_name(density) if density else ""
    by_class = {"UniformTimesteps": "uniform", "LogitNormalTimesteps": "logit_normal",
                "TruncatedLogitNormalTimesteps": "trunc_logit_normal", "LogSNRTimesteps": "log_snr"}
    if kind and kind not in by_class:
        raise UnsupportedSATConfig(f"timestep density {kind}: SAT has {sorted(by_class.values())}")
    sampler = by_class.get(kind, "uniform" if objective == "v" else "logit_normal")
    training: dict[str, Any] = {}
    if sampler == "uniform" and (float(density.get("t_min", 0.0)), float(density.get("t_max", 1.0))) != (0.0, 1.0):
        raise UnsupportedSATConfig("SAT's uniform timestep sampler covers [0, 1] only")
    if sampler == "logit_normal" and (float(density.get("mean", 0.0)), float(density.get("std", 1.0))) != (0.0, 1.0):
        raise UnsupportedSATConfig("SAT's logit_normal timestep sampler has mean 0 and std 1 only")
    if sampler == "trunc_logit_normal" and (float(density.get("left", 0.075)), float(density.get("right", 1.0)),
                                            bool(density.get("flip", True))) != (0.075, 1.0, True):
        raise UnsupportedSATConfig("SAT's trunc_logit_normal timestep sampler is fixed at left=0.075, right=1")
    if sampler != "uniform":
        training["timestep_sampler"] = sampler
    if sampler == "log_snr":
        training["timestep_sampler_options"] = {"mean_logsnr": float(density.get("mean", -1.2)),
                                                "std_logsnr": float(density.get("std", 2.0))}
    fields: dict[str, Any] = {}
    if objective != "v":
        fields["diffusion_objective"] = objective
    shift = node.get("time_shift")
    if shift is not None:
        fields["distribution_shift_options"] = {k: shift[k] for k in _SHIFT_KEYS if k in shift}
    return fields, training


def _conditioner_node(kind: str, cfg: Mapping[str, Any], cond_dim: int, t5_path: str | None) -> dict[str, Any]:
    if kind == "number":
        _check_allowed("conditioning number", cfg, {"min_val": _ANY, "max_val": _ANY})
        return {"_target_": "musicdiff.models.conditioners.NumberConditioner", "output_dim": cond_dim,
                "min_val": float(cfg.get("min_val", 0)), "max_val": float(cfg.get("max_val", 1)),
                "fourier_dim": _NUMBER_FOURIER}
    if kind == "t5":
        _check_allowed("conditioning t5", cfg, {"t5_model_name": _ANY, "max_length": _ANY, "enable_grad": _ANY,
                                                "project_out": _ANY})
        return {"_target_": "musicdiff.models.conditioners.T5Conditioner", "output_dim": cond_dim,
                "model_name": t5_model_name(str(cfg.get("t5_model_name", "t5-base")), t5_path),
                "max_length": int(cfg.get("max_length", 128)), "project_out": bool(cfg.get("project_out", False)),
                "trainable": bool(cfg.get("enable_grad", False))}
    raise UnsupportedSATConfig(f"conditioner type {kind!r}: musicdiff imports 't5' and 'number' conditioners")


def conditioner_config(conditioning: Mapping[str, Any], diffusion: Mapping[str, Any],
                       t5_path: str | None = None) -> dict[str, Any]:
    """musicdiff ``conditioner`` group (a ConditionerSet) for SAT's ``model.conditioning``."""
    _check_allowed("conditioning", conditioning, {"configs": _ANY, "cond_dim": _ANY, "default_keys": _ANY,
                                                  "pre_encoded_keys": []})
    cond_dim = int(conditioning["cond_dim"])
    nodes = {}
    for item in conditioning["configs"]:
        nodes[str(item["id"])] = _conditioner_node(str(item["type"]), item.get("config", {}), cond_dim, t5_path)
    global_ids = list(diffusion.get("global_cond_ids", []))
    return {
        "_target_": "musicdiff.models.conditioners.ConditionerSet",
        "cond_dim": cond_dim,
        "global_cond_dim": cond_dim * len(global_ids),
        "cross_attn_ids": list(diffusion.get("cross_attention_cond_ids", [])),
        "global_ids": global_ids,
        "input_keys": dict(conditioning.get("default_keys", {})),
        "conditioners": nodes,
    }


def sat_to_musicdiff(model_config: Mapping[str, Any], t5_path: str | None = None) -> dict[str, Any]:
    """Translate a SAT ``diffusion_cond`` model config into musicdiff config groups.

    Args:
        model_config: parsed ``model_config.json``.
        t5_path: local T5 directory to write into the conditioner (default: the
            ``MUSICDIFF_T5_PATH`` environment variable at build time, else the local HF cache).

    Returns:
        ``{"autoencoder", "dit", "conditioner", "diffusion", "dataset": {"window_seconds"}, "sample_rate"}``;
        ``window_seconds`` is SAT's ``sample_size`` in seconds (the generation window), ``diffusion``
        the objective node (:func:`diffusion_config`).

    Raises:
        UnsupportedSATConfig: the model uses a feature musicdiff lacks.
    """
    if model_config.get("model_type") not in ("diffusion_cond",):
        raise UnsupportedSATConfig(f"model_type={model_config.get('model_type')!r}: only 'diffusion_cond'")
    model = model_config["model"]
    sample_rate = int(model_config["sample_rate"])
    if "pretransform" not in model:
        raise UnsupportedSATConfig("model.pretransform is missing: musicdiff models are latent diffusion models")
    autoencoder = autoencoder_config(model["pretransform"], sample_rate)
    dit = dit_config(model["diffusion"])
    conditioner = conditioner_config(model.get("conditioning", {"configs": [], "cond_dim": 0}), model["diffusion"],
                                     t5_path)
    if dit["io_channels"] != autoencoder["latent_dim"]:
        raise UnsupportedSATConfig(f"DiT io_channels {dit['io_channels']} != VAE latent_dim {autoencoder['latent_dim']}")
    if dit["global_cond_dim"] != conditioner["global_cond_dim"]:
        raise UnsupportedSATConfig(f"DiT global_cond_dim {dit['global_cond_dim']} != "
                                   f"{conditioner['global_cond_dim']} from the global conditioners")
    return {
        "autoencoder": autoencoder,
        "dit": dit,
        "conditioner": conditioner,
        "diffusion": diffusion_config(model["diffusion"], model_config.get("training")),
        "dataset": {"window_seconds": window_seconds(int(model_config["sample_size"]), autoencoder["downsampling_ratio"],
                                                     sample_rate)},
        "sample_rate": sample_rate,
    }


def _sat_t5_name(model_name: str, override: str | None) -> str:
    if override:
        return override
    name = str(model_name).rstrip("/")
    if "oc.env:" in name:  # the interpolation written by t5_model_name(): take its default
        name = name.split(",", 1)[1].rstrip("}")
    for sat_name in _SAT_T5_NAMES:
        if name == sat_name or name.endswith("/" + sat_name.split("/")[-1]):
            return sat_name
    raise UnsupportedSATConfig(f"cannot tell which SAT T5 name '{model_name}' is; pass t5_name=<SAT name>")


def _target_name(node: Mapping[str, Any]) -> str:
    return str(node.get("_target_", "")).rsplit(".", 1)[-1]


def musicdiff_to_sat(cfg: Mapping[str, Any], window_seconds: float | None = None,
                     t5_name: str | None = None) -> dict[str, Any]:
    """Translate musicdiff config groups back into a SAT ``model_config.json`` dict.

    Args:
        cfg: a mapping (plain or OmegaConf) with ``autoencoder``, ``dit`` and ``conditioner`` (and
            ``diffusion``: its objective, time shift and timestep density are written back; none = ``v``).
        window_seconds: generation window; default ``cfg.dataset.window_seconds``.
        t5_name: SAT ``t5_model_name`` for a T5 conditioner (default: inferred from its path).

    Returns:
        The SAT config (``model_type: diffusion_cond``).

    Raises:
        UnsupportedSATConfig: a musicdiff option SAT cannot express (e.g. a LUT or CLAP conditioner,
            masked cross-attention, a rotary width other than SAT's).
    """
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    cfg = copy.deepcopy(dict(cfg))
    ae, dit, cond = cfg["autoencoder"], cfg["dit"], cfg["conditioner"]
    if window_seconds is None:
        window_seconds = (cfg.get("dataset") or {}).get("window_seconds")
    if window_seconds is None:
        raise UnsupportedSATConfig("window_seconds is unknown (no dataset.window_seconds); pass it explicitly")
    sample_rate = int(ae["sample_rate"])
    ratio = int(ae["downsampling_ratio"])
    latents = -(-round(float(window_seconds) * sample_rate) // ratio)

    width, heads = int(dit["width"]), int(dit["num_heads"])
    rotary = dit.get("rotary_dim")
    rotary = width // heads // 2 if rotary is None else int(rotary)
    if rotary not in (0, max(width // heads // 2, 32)):
        raise UnsupportedSATConfig(f"rotary_dim {rotary}: SAT rotates max(head_dim/2, 32) channels (or none)")
    if int(dit.get("timestep_features_dim", _TIMESTEP_FEATURES)) != _TIMESTEP_FEATURES:
        raise UnsupportedSATConfig("SAT's DiT has 256 timestep Fourier features")
    if int(dit.get("ff_mult", 4)) != 4:
        raise UnsupportedSATConfig("SAT's DiT feed-forward expansion is 4")
    qk_norm = str(dit.get("qk_norm", "none"))
    if qk_norm not in _QK_NORMS:
        raise UnsupportedSATConfig(f"dit.qk_norm={qk_norm!r}: SAT's DiT has {list(_QK_NORMS)} in this exporter")
    if dit.get("use_cross_attn_mask", True) and int(dit.get("cond_token_dim", 0)) > 0:
        raise UnsupportedSATConfig("SAT's DiT ignores the cross-attention mask; set dit.use_cross_attn_mask=false")

    configs = []
    for name, node in cond["conditioners"].items():
        kind = _target_name(node)
        if kind == "NumberConditioner":
            if int(node.get("fourier_dim", _NUMBER_FOURIER)) != _NUMBER_FOURIER:
                raise UnsupportedSATConfig(f"conditioner '{name}': SAT's number embedder has 256 Fourier features")
            configs.append({"id": name, "type": "number", "config": {"min_val": node.get("min_val", 0.0),
                                                                      "max_val": node.get("max_val", 512.0)}})
        elif kind == "T5Conditioner":
            configs.append({"id": name, "type": "t5", "config": {
                "t5_model_name": _sat_t5_name(node.get("model_name", "t5-base"), t5_name),
                "max_length": int(node.get("max_length", 128)), "project_out": bool(node.get("project_out", False)),
                "enable_grad": bool(node.get("trainable", node.get("enable_grad", False)))}})
        else:
            raise UnsupportedSATConfig(f"conditioner '{name}' ({kind}) has no SAT counterpart in this exporter")
    conditioning: dict[str, Any] = {"configs": configs, "cond_dim": int(cond["cond_dim"])}
    if cond.get("input_keys"):
        conditioning["default_keys"] = dict(cond["input_keys"])
    if cond.get("field_defaults"):
        raise UnsupportedSATConfig("conditioner.field_defaults has no SAT counterpart (SAT needs every field)")

    def oobleck(node: Mapping[str, Any], encoder: bool) -> dict[str, Any]:
        out = {("in_channels" if encoder else "out_channels"): int(ae["io_channels"]),
               "channels": int(node["channels"]), "c_mults": list(node["c_mults"]), "strides": list(node["strides"]),
               "latent_dim": int(node["latent_dim"]), "use_snake": bool(node.get("use_snake", True))}
        if not encoder:
            out["final_tanh"] = bool(node.get("final_tanh", False))
            if node.get("use_nearest_upsample", False):
                out["use_nearest_upsample"] = True
        return {"type": "oobleck", "config": out}

    diffusion_fields, training = _sat_diffusion_fields(cfg.get("diffusion"))
    pretransform_cfg: dict[str, Any] = {
        "encoder": oobleck(ae["encoder"], True), "decoder": oobleck(ae["decoder"], False),
        "latent_dim": int(ae["latent_dim"]), "downsampling_ratio": ratio, "io_channels": int(ae["io_channels"])}
    if ae.get("bottleneck") is not None:
        pretransform_cfg["bottleneck"] = {"type": "vae"}
    out = {
        "model_type": "diffusion_cond",
        "sample_size": latents * ratio,
        "sample_rate": sample_rate,
        "audio_channels": int(ae["io_channels"]),
        "model": {
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": pretransform_cfg},
            "conditioning": conditioning,
            "diffusion": {
                "cross_attention_cond_ids": list(cond.get("cross_attn_ids", [])),
                "global_cond_ids": list(cond.get("global_ids", [])),
                **diffusion_fields,
                "type": "dit",
                "config": {
                    "io_channels": int(dit["io_channels"]), "embed_dim": width, "depth": int(dit["depth"]),
                    "num_heads": heads, "cond_token_dim": int(dit.get("cond_token_dim", 0)),
                    "global_cond_dim": int(dit.get("global_cond_dim", 0)),
                    "project_cond_tokens": bool(dit.get("project_cond_tokens", True)),
                    "project_global_cond": bool(dit.get("project_global_cond", True)),
                    "rotary_pos_emb": rotary > 0,
                    "transformer_type": "continuous_transformer",
                    **({"attn_kwargs": {"qk_norm": qk_norm}} if qk_norm != "none" else {}),
                },
            },
            "io_channels": int(dit["io_channels"]),
        },
    }
    if training:
        out["training"] = training
    return out
