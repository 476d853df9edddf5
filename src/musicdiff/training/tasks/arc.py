"""ARC post-training: turn a trained diffusion model into a few-step generator without CFG.

Novack et al., "Fast Text-to-Audio Generation with Adversarial Post-Training" (ARC, arXiv
2505.08175 §3; Stable Audio Open Small). Starting from a trained v or rectified-flow model
(``musicdiff-train task=arc init_from=<export>``), steps alternate as in stable-audio-tools'
``ARCTrainingWrapper``:

* generator step (even steps): ``x_t = (1 − t)·x0 + t·eps``, the generator's clean estimate
  ``x̂0 = D_G(x_t, t)`` (``x_t − t·v`` for a velocity network; a v-network is evaluated at the
  equivalent VP time, :func:`musicdiff.diffusion.make_denoiser`), then ``x̂0`` and ``x0`` are
  re-noised with the same noise at a time ``s`` and the generator minimises the relativistic loss
  ``softplus(D(x0_s) − D(x̂0_s))`` (:mod:`musicdiff.losses.arc`);
* discriminator step (odd steps): the relativistic loss ``softplus(−(D(x0_s) − D(x̂0_s)))`` plus
  the contrastive prompt loss ``softplus(−(D(x0_s, c) − D(x0_s, c_rolled)))``.

The discriminator (:class:`musicdiff.models.arc_discriminator.ARCDiscriminator`) is the
pre-trained DiT's first blocks plus a convolutional head. The result keeps its parametrisation
(a rectified-flow base is recorded as SAT's ``rf_denoiser``) and samples with
``sampler=flow_pingpong`` (8 steps, no CFG). SAT's optional ODE-distillation warm-up and
gradient penalties are not implemented.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from musicdiff.diffusion.cfg_dropout import cfg_dropout
from musicdiff.diffusion.densities import UniformTimesteps
from musicdiff.diffusion.objectives import make_denoiser, objective_family, objective_of
from musicdiff.losses.arc import contrastive_loss, flow_noise, relativistic_losses, roll_prompts
from musicdiff.training.tasks.diffusion import DiffusionTask

log = logging.getLogger("musicdiff.tasks.arc")


def post_trained_objective(diffusion: Any) -> Any:
    """The ``diffusion`` node an ARC run records for its base model's node (``rf_denoiser`` for flow bases).

    ``musicdiff-train task=arc init_from=<export>`` adopts the base's objective through this hook
    (``musicdiff.cli.train.pretrained_parts``), so the export tells the generator what the network predicts.
    """
    from omegaconf import OmegaConf

    node = OmegaConf.create(OmegaConf.to_container(diffusion, resolve=True)) if OmegaConf.is_config(diffusion) \
        else OmegaConf.create(dict(diffusion))
    if objective_family(objective_of(node)) == "flow":
        node.objective = "rf_denoiser"
    return node


class ARCTask(DiffusionTask):
    """The generator (the pre-trained DiT, its EMA exported) and the ARC discriminator.

    Args:
        dit: the pre-trained DiT (from ``init_from``); trained as the generator.
        conditioner: its conditioner set (frozen by ``freeze: [conditioner]`` in ``conf/task/arc.yaml``).
        diffusion: the base model's objective node (``objective`` decides how ``x̂0`` is read).
        optimizer: partial optimiser of the generator.
        discriminator: ``discriminator(dit) -> nn.Module`` scoring ``(x_t, t, **cond)``, built from the
            pre-trained DiT before any update (:class:`~musicdiff.models.arc_discriminator.ARCDiscriminator`).
        optimizer_discriminator: partial optimiser of the discriminator.
        generator_times: density of the generator's input times ``t`` (SAT ``noise_dist.generator``).
        discriminator_times: density of the re-noising times ``s`` (SAT ``noise_dist.discriminator``).
        adversarial_weight: weight of the generator's relativistic loss.
        discriminator_weight: weight of the discriminator's relativistic loss.
        contrastive_weight: weight of the contrastive prompt loss (0 disables it).
        lr_schedule: partial lr scheduler of both optimisers, or None.
        autoencoder: the frozen autoencoder (from ``init_from``; decodes demos, encodes audio batches).
        cfg_dropout_prob: condition dropout of the generator's input (SAT's ARC default 0: no CFG).
        **kwargs: :class:`DiffusionTask` arguments (autoencoder, EMA, demos, sampler, freeze ...).
    """

    adopt_objective = staticmethod(post_trained_objective)  # read by musicdiff.cli.train.pretrained_parts

    def __init__(
        self,
        dit: nn.Module,
        conditioner: nn.Module,
        diffusion: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        discriminator: Callable[[nn.Module], nn.Module],
        optimizer_discriminator: Callable[..., torch.optim.Optimizer],
        generator_times: Callable[..., torch.Tensor] | None = None,
        discriminator_times: Callable[..., torch.Tensor] | None = None,
        adversarial_weight: float = 1.0,
        discriminator_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        lr_schedule: Callable[..., Any] | None = None,
        autoencoder: nn.Module | None = None,
        cfg_dropout_prob: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("adapter") is not None and getattr(kwargs["adapter"], "kind", "none") != "none":
            raise ValueError("ARC post-training trains the whole generator; set adapter=none")
        kwargs.pop("adapter", None)
        kwargs.pop("adapter_ab_every", None)
        super().__init__(dit, conditioner, diffusion, optimizer, lr_schedule=lr_schedule, autoencoder=autoencoder,
                         cfg_dropout_prob=cfg_dropout_prob, **kwargs)
        self.discriminator = discriminator(dit)
        self._optimizer_discriminator = optimizer_discriminator
        self.generator_times = generator_times or UniformTimesteps()
        self.discriminator_times = discriminator_times or UniformTimesteps()
        self.adversarial_weight = float(adversarial_weight)
        self.discriminator_weight = float(discriminator_weight)
        self.contrastive_weight = float(contrastive_weight)
        self.objective = objective_of(diffusion)

    # ------------------------------------------------------------------ setup
    def configure_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, Any]]:
        """``"dit"`` (the generator) and ``"discriminator"``, each with its own lr schedule."""
        out = super().configure_optimizers()
        opt = self._optimizer_discriminator([p for p in self.discriminator.parameters() if p.requires_grad])
        out["discriminator"] = (opt, self._lr_schedule(opt) if self._lr_schedule is not None else None)
        return out

    def checkpoint_modules(self) -> dict[str, nn.Module]:
        """The generator, its EMA, the conditioner and the discriminator."""
        return {**super().checkpoint_modules(), "discriminator": self.discriminator}

    # --------------------------------------------------------------- the losses
    def clean_estimate(self, x_t: torch.Tensor, t: torch.Tensor, cond: Mapping[str, Any]) -> torch.Tensor:
        """The generator's ``x̂0`` from a flow sample ``x_t`` at times ``t`` (one network evaluation)."""
        denoiser = make_denoiser(self.dit, self.objective, "flow")
        return denoiser(x_t, t, **{k: v for k, v in cond.items() if v is not None})

    def _scores(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, Any]) -> torch.Tensor:
        """Discriminator scores of flow samples; a v-objective trunk sees them as the VP samples it was
        trained on (``x / r`` at time ``τ = 2/π·atan2(t, 1 − t)``, :class:`~musicdiff.diffusion.VFlowDenoiser`)."""
        if objective_family(self.objective) == "v":
            tb = t.reshape(-1, 1, 1).to(x.dtype)
            x, t = x / torch.sqrt((1 - tb) ** 2 + tb**2), torch.atan2(t, 1 - t) * (2 / math.pi)
        return self.discriminator(x, t, **{k: v for k, v in cond.items() if v is not None})

    def generator_loss(self, x0: torch.Tensor, cond: Mapping[str, Any], t: torch.Tensor, noise: torch.Tensor,
                       s: torch.Tensor, renoise: torch.Tensor, gen_cond: Mapping[str, Any] | None = None,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Relativistic generator loss of one batch for given times and noises (differentiable in the generator).

        ``gen_cond``: the generator's conditioning when it differs from the discriminator's ``cond``
        (CFG dropout); default ``cond``.
        """
        fake = self.clean_estimate(flow_noise(x0, noise, t), t, cond if gen_cond is None else gen_cond)
        real_scores = self._scores(flow_noise(x0, renoise, s), s, cond)
        fake_scores = self._scores(flow_noise(fake, renoise, s), s, cond)
        _, loss = relativistic_losses(real_scores, fake_scores)
        return loss * self.adversarial_weight, {"score_gap": (real_scores - fake_scores).mean().detach()}

    def discriminator_loss(self, x0: torch.Tensor, fake: torch.Tensor, cond: Mapping[str, Any],
                           rolled_cond: Mapping[str, Any] | None, s: torch.Tensor,
                           renoise: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Relativistic discriminator loss plus the contrastive prompt loss (``rolled_cond``: rotated prompts)."""
        real_t = flow_noise(x0, renoise, s)
        real_scores = self._scores(real_t, s, cond)
        fake_scores = self._scores(flow_noise(fake.detach(), renoise, s), s, cond)
        loss_dis, _ = relativistic_losses(real_scores, fake_scores)
        loss_dis = loss_dis * self.discriminator_weight
        info = {"dis": loss_dis.detach()}
        loss = loss_dis
        if rolled_cond is not None and self.contrastive_weight > 0:
            loss_con = contrastive_loss(real_scores, self._scores(real_t, s, rolled_cond)) * self.contrastive_weight
            info["contrastive"] = loss_con.detach()
            loss = loss + loss_con
        return loss, info

    # ------------------------------------------------------------------- steps
    def training_step(self, batch: Mapping[str, Any], step: int, ctx: Any) -> dict[str, float]:
        """Even steps update the generator, odd steps the discriminator (SAT's alternation)."""
        x0, _ = self.latents_from_batch(batch)
        b, device = x0.shape[0], x0.device
        metadata: Sequence[Mapping[str, Any]] = batch["metadata"]
        cond = self.conditioner(metadata, device)
        t = self.generator_times(b, device)
        s = self.discriminator_times(b, device)
        noise, renoise = torch.randn_like(x0), torch.randn_like(x0)
        if step % 2 == 0:
            self.discriminator.requires_grad_(False)  # its gradients would leak into the next discriminator step
            try:
                gen_cond = cfg_dropout(cond, self.cfg_dropout_prob) if self.cfg_dropout_prob > 0 else None
                loss, info = self.generator_loss(x0, cond, t, noise, s, renoise, gen_cond)
                ctx.backward_step("dit", loss)
            finally:
                self.discriminator.requires_grad_(True)
            value = float(loss.detach())
            return {"loss": value, "gen_loss": value, "score_gap": float(info["score_gap"])}
        with torch.no_grad():
            fake = self.clean_estimate(flow_noise(x0, noise, t), t, cond)
        rolled = self.conditioner(roll_prompts(metadata), device) if self.contrastive_weight > 0 and b > 1 else None
        loss, info = self.discriminator_loss(x0, fake, cond, rolled, s, renoise)
        ctx.backward_step("discriminator", loss)
        return {"loss": float(loss.detach()), "dis_loss": float(info["dis"]),
                **({"contrastive_loss": float(info["contrastive"])} if "contrastive" in info else {})}

    def on_step_end(self, step: int) -> None:
        """EMA of the generator after its own updates only (``step`` is the count of finished steps)."""
        if step % 2 == 1:
            super().on_step_end(step)
