"""LOKT (Nguyen et al., NeurIPS 2023): label-only model inversion by knowledge transfer to surrogate models.

The oracle answers top-1 labels only. LOKT turns those labels into white-box surrogates and attacks them instead:

1. **T-ACGAN.** A conditional generator G(z, y) and a discriminator with a real/fake head and a class head. D's class
   head learns the *target's* label of each generated image (one hard-label query per fake, per D step); G gets its
   class signal only through that head. Losses (non-saturating, i.e. BCE on a sigmoid): D = adv(real public, fake) +
   alpha * CE(D_cls(fake), T(fake)); G = adv + alpha * CE(D_cls(G(z, y)), y), alpha 1.5. A warm-up without the class
   loss comes first (no query): :meth:`LOKT.warmup`, a pure function of (prior, public images, params, seed), so a
   caller may cache it and share it across the defended rows of a table.
2. **Surrogates.** ``per_class`` generated images per class, each labelled by the oracle, train ``surrogates``
   small DenseNet-style classifiers (:class:`DenseNet`, a family other than the VGG-16 / IR-152 targets) on a clean
   and an augmented view per step. D's class head is an extra surrogate.
3. **White-box attack** on the surrogates only (no query): per class, ``top_k`` latents optimised with Adam on the
   max-margin loss of every surrogate on two augmented views of G(z, y); all ``top_k`` are returned (no selection).

Followed: the official code, github.com/ngoc-nguyen-0/LOKT_neurips2023 (``train_tacgan.py``: the T-ACGAN loop, warm-up
``n_uncond`` 1000 then 19,000 iterations, batch 128, 5 D steps per G step, Adam 2e-4 betas (0, 0.9), alpha 1.5;
``models/generators/resnet64.py`` ``Generator_cond_wgp2`` and ``models/discriminators/snresnet64.py``
``Discriminator_cond_wgp``: the DCGAN-class conditional pair, categorical conditional BN in the three upsampling
blocks, a class head on the critic's last feature map; ``links/conditional_batchnorm.py``; ``create_dataset.py``: 500
images per class labelled by the target's argmax; ``train_surrogate_model.py``: SGD lr 0.1, momentum 0.9, weight decay
5e-4, cosine schedule, 200 epochs of 30,000 images, batch 256, loss 0.5 CE(clean) + 0.5 CE(augmented), augmentations
random resized crop (0.8-1), colour jitter 0.2 (p 0.5), flip, rotation 5 degrees; ``plg_tacgan.py`` + ``losses.py``:
5 seeds per class, Adam lr 0.1, 600 steps, max-margin loss on two augmented views averaged over the surrogates) and
the Model-Inversion-Attack-ToolBox (``src/modelinversion/train/gan.py``, ``LoktGanTrainer``).

Departures, all deliberate:

* Networks. G is the prior's own DCGAN generator with its three BatchNorm2d layers made class-conditional (per-class
  gamma/beta initialised to the unconditional affine parameters, so at step 0 G(z, y) = prior(z) for every y; the
  projection's BatchNorm1d stays unconditional, as in ``Generator_cond_wgp2``); the official pair trains from scratch.
  D is :class:`ssdlib.models.generators.Discriminator` (same family as the official critic) plus a linear class head
  on the global max of its last feature map (official: a 3x3 max pool of that 4x4 map); it starts from the prior's
  discriminator state when the caller passes one (``discriminator=``), else from scratch with instance norm.
* Warm-up: official 1,000 GAN iterations without the class loss from random weights. Here G starts as the trained
  prior, and D as the prior's critic when given, so ``cpu`` runs no warm-up: measured on LFW / IR-152, T-ACGAN from
  the prior's G and critic keeps the prior's image quality, while a D from scratch visibly degrades the images,
  with 0 and with 100 warm-up steps (a warning says so: give the critic). Real batches are uniform draws of the
  public images with random horizontal flips (the prior's recipe). ``cpu`` takes 1 D step per G step (official 5).
* Surrogates: the official ones are ImageNet-pretrained DenseNet-121/161/169; nothing can be downloaded here, so they
  are small DenseNet-style CNNs trained from scratch (``surrogate_growth``, ``surrogate_layers``; ``paper``: the
  DenseNet-121 block layout), with a 4x4 stride-4 stem (DenseNet's conv + max-pool stem costs a third more on CPU
  for the same 16x16 map), differing by their initialisation seed (official: by depth). Training is counted in steps
  (official 200 epochs x 117 steps = 23,400), the cosine schedule runs over steps; a labelled set that fits
  :data:`KEEP_IMAGES_BYTES` is kept as uint8 images instead of being re-generated from its latents every step (the
  same images: G is fixed). The official attack uses the DenseNets only (README ``--classid 0,1,2``; D is id 3, an
  option); here D's class head joins the ensemble by default (``use_discriminator``: at ``cpu``, on 20 classes of
  LFW / IR-152, it raised the target's top-1 hit rate of the reconstructions in both setups measured, 0.29 -> 0.39
  and 0.39 -> 0.43).
* Augmentations are implemented in torch (one affine grid per image: crop, flip, rotation; then brightness and
  contrast), not kornia; the differentiable version serves the white-box phase, where the two views of each image
  go through a surrogate as one batch (eval mode: still independent). The official attack optimises its 5 seeds one
  after the other; here the ``top_k`` latents of a class are one batch (independent in eval mode).
* ``scores`` of a result are the surrogate ensemble's mean softmax probability of the target class on G(z, target)
  (the attack never sees a target probability); results are ordered by it, but all ``top_k`` are kept.
* ``latents`` of a result are latents of the *conditional* generator (decode them with ``G(z, target)``, not with
  ``prior.decode``); ``images`` are the decoded reconstructions.
"""
from __future__ import annotations

import copy
import math
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..blackbox import BlackBox
from ..cache import fingerprint, state_fingerprint
from ..models.generators import IMAGE_SIZE, Discriminator, Generator
from .base import Attack, AttackResult, check_oracle, class_generator

__all__ = ["KEEP_IMAGES_BYTES", "LOKT", "ClassDiscriminator", "ConditionalBatchNorm2d", "ConditionalGenerator",
           "DenseNet", "augment", "max_margin_loss"]


#: the labelled synthetic set is kept in memory as uint8 images up to this size (cpu: 76 MB); a larger one (paper:
#: 500 x 1000 images, 6 GB) is re-generated from its latents at every surrogate step, as the official code does.
KEEP_IMAGES_BYTES = 1 << 30


# ---------------------------------------------------------------------------------------------------- networks
class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without affine parameters, then a per-class gamma/beta (an embedding per class)."""

    def __init__(self, bn: nn.BatchNorm2d, num_classes: int):
        super().__init__()
        c = bn.num_features
        self.norm = nn.BatchNorm2d(c, eps=bn.eps, momentum=bn.momentum, affine=False)
        self.norm.load_state_dict({k: v for k, v in bn.state_dict().items() if k not in ("weight", "bias")})
        self.weight = nn.Embedding(num_classes, c)
        self.bias = nn.Embedding(num_classes, c)
        with torch.no_grad():  # every class starts at the unconditional layer's affine map
            self.weight.weight.copy_(bn.weight.detach().expand(num_classes, c))
            self.bias.weight.copy_(bn.bias.detach().expand(num_classes, c))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.weight(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class ConditionalGenerator(nn.Module):
    """G(z, y): a copy of the prior's DCGAN :class:`Generator` whose upsampling BatchNorm2d layers are conditional."""

    def __init__(self, generator: Generator, num_classes: int):
        super().__init__()
        if not isinstance(generator, Generator):
            raise TypeError("LOKT builds its conditional generator from the prior's DCGAN generator "
                            "(ssdlib.models.generators.Generator); got "
                            f"{type(generator).__name__}. A prior of another family needs a conditional version of "
                            "its own generator, which this module does not provide")
        g = copy.deepcopy(generator).cpu()
        self.latent_dim, self.dim, self.num_classes = g.latent_dim, g.dim, int(num_classes)
        self.project = g.project
        layers = []
        for block in g.body:
            if isinstance(block, nn.Sequential):
                layers += [ConditionalBatchNorm2d(m, num_classes) if isinstance(m, nn.BatchNorm2d) else m
                           for m in block]
            else:
                layers.append(block)
        self.body = nn.ModuleList(layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must have shape [N, {self.latent_dim}], got {tuple(z.shape)}")
        if y.shape != (len(z),):
            raise ValueError(f"labels must have shape [{len(z)}], got {tuple(y.shape)}")
        x = self.project(z).view(len(z), self.dim * 8, 4, 4)
        for layer in self.body:
            x = layer(x, y) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x.add(1).mul(0.5)


class ClassDiscriminator(nn.Module):
    """D(x) -> (real/fake logit ``[N]``, class logits ``[N, C]``): the prior's critic family plus a class head."""

    def __init__(self, num_classes: int, dim: int = 64, norm: str = "instance", init: Discriminator | None = None):
        super().__init__()
        base = copy.deepcopy(init).cpu() if init is not None else Discriminator(dim, norm)
        self.dim, self.norm, self.num_classes = base.dim, base.norm, int(num_classes)
        self.features = base.body[:-1]
        self.adversarial = base.body[-1]
        self.classifier = nn.Linear(base.dim * 8, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must have shape [N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}], got {tuple(x.shape)}")
        h = self.features(x * 2 - 1)
        return self.adversarial(h).flatten(), self.classifier(h.amax(dim=(2, 3)))


class _DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.conv = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], 1)


class DenseNet(nn.Module):
    """A small DenseNet-style classifier of 64x64 images (the surrogate family; the targets are VGG / IR nets):
    a 4x4 stride-4 stem (cheaper on CPU than DenseNet's conv + max-pool stem, same 16x16 output), dense blocks of
    BN-ReLU-conv3x3 layers joined by half-compressing transitions, global average pooling, a linear classifier."""

    def __init__(self, num_classes: int, growth: int = 12, layers: tuple[int, ...] = (4, 4, 4)):
        super().__init__()
        c = 2 * growth
        mods: list[nn.Module] = [nn.Conv2d(3, c, 4, stride=4, bias=False)]  # a quarter side, 16x16, in one conv
        for i, n in enumerate(layers):
            for _ in range(n):
                mods.append(_DenseLayer(c, growth))
                c += growth
            if i < len(layers) - 1:  # transition: compress by half, halve the side
                mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
                c //= 2
        mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*mods)
        self.fc = nn.Linear(c, num_classes)
        self.num_classes = int(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x * 2 - 1))


# ----------------------------------------------------------------------------------------------- augmentation
def augment(x: torch.Tensor, gen: torch.Generator, *, jitter_prob: float = 1.0, crop: float = 0.8,
            degrees: float = 5.0, jitter: float = 0.2) -> torch.Tensor:
    """Per-image random resized crop (area ``crop``..1, square), horizontal flip, rotation (+-``degrees``), then
    brightness and contrast jitter (+-``jitter``, with probability ``jitter_prob``); differentiable in ``x``."""
    n = len(x)
    rand = torch.rand(n, 6, generator=gen)
    side = (crop + (1 - crop) * rand[:, 0]).sqrt()
    angle = (2 * rand[:, 1] - 1) * math.radians(degrees)
    flip = torch.where(rand[:, 2] < 0.5, -1.0, 1.0)
    shift = (2 * rand[:, 3:5] - 1) * (1 - side)[:, None]
    cos, sin = angle.cos() * side, angle.sin() * side
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    factors = 1 + (2 * torch.rand(n, 2, generator=gen) - 1) * jitter
    apply = (torch.rand(n, generator=gen) < jitter_prob).float()
    b = (1 + apply * (factors[:, 0] - 1)).to(x)[:, None, None, None]
    c = (1 + apply * (factors[:, 1] - 1)).to(x)[:, None, None, None]
    out = (out * b).clamp(0, 1)
    mean = (0.299 * out[:, 0] + 0.587 * out[:, 1] + 0.114 * out[:, 2]).mean(dim=(1, 2))[:, None, None, None]
    return ((out - mean) * c + mean).clamp(0, 1)


def max_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of ``-logit_y + max_{j != y} logit_j`` (LOKT's identity loss, ``losses.max_margin_loss``)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (other - true).mean()


# ------------------------------------------------------------------------------------------------------- attack
class LOKT(Attack):
    """LOKT's label-only attack: T-ACGAN + surrogates from hard labels, then a white-box attack on the surrogates.

    ``LOKT(prior, public=images, discriminator=None, scale=..., **overrides)``: ``public`` are the attacker's public
    images ``[N, 3, 64, 64]`` (uint8, or float in [0, 1]), the GAN's real data; ``discriminator`` optionally the
    prior's critic (module or state dict) to start D from. ``AttackResult.scores`` are the surrogate ensemble's
    probabilities of the class (no target probability exists for a label-only attacker); ``queries`` is 0 per class.
    """

    name = "lokt"
    mode = "hard"
    #: warmup_steps / tacgan_steps = T-ACGAN iterations without / with the class loss (each: one G step and ``n_dis``
    #: D steps of ``batch_size`` images; a D step with the class loss queries its ``batch_size`` fakes); per_class =
    #: labelled images per class; surrogates = DenseNets trained ``surrogate_steps`` steps of ``surrogate_batch``;
    #: holdout = oracle-labelled generated images measuring the surrogates' agreement with the target;
    #: attack_steps / top_k = white-box Adam steps / images per class. paper = official counts (12.66 M setup
    #: queries on 1,000 classes); cpu is sized for a 2-core machine: measured on LFW / IR-152 (62 classes, one
    #: thread, near-idle cores) T-ACGAN 60 s, labelling 16 s, surrogate 102 s, about 3 minutes and 12,900 queries
    #: per row, 2-3 s per class (less on two threads; 60 attack steps add about 0.04 to the hit rate at twice the
    #: cost); smoke for tests.
    EFFORT = {
        "paper": dict(warmup_steps=1_000, tacgan_steps=19_000, batch_size=128, n_dis=5, per_class=500, surrogates=3,
                      surrogate_steps=23_400, surrogate_batch=256, surrogate_growth=32,
                      surrogate_layers=(6, 12, 24, 16), holdout=1_000, attack_steps=600, top_k=5),
        "cpu": dict(warmup_steps=0, tacgan_steps=100, batch_size=64, n_dis=1, per_class=100, surrogates=1,
                    surrogate_steps=500, surrogate_batch=64, surrogate_growth=12, surrogate_layers=(4, 4, 4),
                    holdout=300, attack_steps=30, top_k=5),
        "smoke": dict(warmup_steps=2, tacgan_steps=3, batch_size=8, n_dis=1, per_class=4, surrogates=1,
                      surrogate_steps=4, surrogate_batch=8, surrogate_growth=4, surrogate_layers=(1, 1),
                      holdout=16, attack_steps=3, top_k=2),
    }
    #: official: alpha 1.5, Adam 2e-4 betas (0, 0.9); surrogate SGD 0.1 / 0.9 / 5e-4; attack Adam lr 0.1.
    #: ``num_classes`` None: the oracle's; ``query_batch``: images per oracle call when labelling.
    DEFAULTS = dict(alpha=1.5, lr=2e-4, betas=(0.0, 0.9), surrogate_lr=0.1, surrogate_momentum=0.9,
                    surrogate_weight_decay=5e-4, attack_lr=0.1, use_discriminator=True, num_classes=None,
                    query_batch=500)
    SETUP_KEYS = ("warmup_steps", "tacgan_steps", "batch_size", "n_dis", "per_class", "surrogates", "surrogate_steps",
                  "surrogate_batch", "surrogate_growth", "surrogate_layers", "holdout", "alpha", "lr", "betas",
                  "surrogate_lr", "surrogate_momentum", "surrogate_weight_decay", "num_classes", "query_batch")
    #: the parameters the query-free warm-up depends on (with the prior, the public images and the seed).
    WARMUP_KEYS = ("warmup_steps", "batch_size", "n_dis", "lr", "betas")

    def __init__(self, prior, *, public: torch.Tensor | None = None, discriminator=None, scale: str = "cpu",
                 progress: bool = False, **overrides):
        super().__init__(prior, scale=scale, progress=progress, **overrides)
        if not isinstance(prior.generator, Generator):
            raise TypeError("LOKT needs a prior whose generator is the DCGAN ssdlib.models.generators.Generator (it "
                            f"makes its batch norms class-conditional); got {type(prior.generator).__name__}")
        self.public = _check_public(public)
        if isinstance(discriminator, dict):
            state, discriminator = discriminator, None
            dim = state["body.0.weight"].shape[0] if "body.0.weight" in state else None
            if dim is None:
                raise ValueError("discriminator state is not a ssdlib.models.generators.Discriminator state dict")
            norm = "batch" if any(k.endswith("running_mean") for k in state) else "instance"
            discriminator = Discriminator(int(dim), norm)
            discriminator.load_state_dict(state)
        if discriminator is not None and not isinstance(discriminator, Discriminator):
            raise TypeError("discriminator must be a ssdlib.models.generators.Discriminator or its state dict, got "
                            f"{type(discriminator).__name__}")
        self.discriminator = discriminator
        if discriminator is None and self.params["warmup_steps"] + self.params["tacgan_steps"] > 0:
            warnings.warn("LOKT's discriminator starts from scratch: until it has learned, its real/fake head degrades "
                          "the prior's images (at cpu scale visibly, with 0 or 100 warm-up steps); pass the prior's "
                          "critic (discriminator=...)", UserWarning, stacklevel=2)
        self._public_key: str | None = None
        self._warm: dict[tuple[int, int], dict] = {}

    def _check_params(self) -> None:
        super()._check_params()
        p = self.params
        for k in ("batch_size", "n_dis", "per_class", "surrogate_batch", "holdout", "top_k", "query_batch"):
            if not isinstance(p[k], int) or p[k] < 1:
                raise ValueError(f"lokt parameter {k} must be a positive integer, got {p[k]!r}")
        if p["surrogates"] < 1 and not p["use_discriminator"]:
            raise ValueError("lokt needs at least one surrogate: surrogates >= 1 or use_discriminator=True")
        if not len(p["surrogate_layers"]) or any(int(n) < 1 for n in p["surrogate_layers"]):
            raise ValueError(f"surrogate_layers must be positive layer counts per dense block, got "
                             f"{p['surrogate_layers']!r}")
        if p["num_classes"] is not None and (not isinstance(p["num_classes"], int) or p["num_classes"] < 2):
            raise ValueError(f"num_classes must be None (the oracle's) or an integer >= 2, got {p['num_classes']!r}")

    # ----------------------------------------------------------------------------------------------- plumbing
    def check(self, oracle) -> BlackBox:
        """The oracle if it is a hard-label :class:`BlackBox`; LOKT refuses probability vectors by design."""
        oracle = check_oracle(oracle, self.mode, self.name)
        if oracle.mode != "hard":
            raise ValueError(f"{self.name} is a hard-label attack: it uses top-1 labels only, but the oracle answers "
                             f"in {oracle.mode!r} mode (probability vectors); use BlackBox(..., mode='hard')")
        return oracle

    @property
    def setup_params(self) -> dict:
        """The setup's parameters plus the identity of the public images and of D's starting state."""
        if self._public_key is None:
            self._public_key = fingerprint(self.public)
        disc = None if self.discriminator is None else state_fingerprint(self.discriminator.state_dict())
        return {**super().setup_params, "public": self._public_key, "discriminator": disc}

    def warmup_config(self, seed: int = 0, *, num_classes: int | None = None) -> dict:
        """What :meth:`warmup` depends on: a cache configuration for sharing it across oracles."""
        p = self.setup_params
        return {"kind": "lokt-warmup", "prior": self.prior.key, "public": p["public"],
                "discriminator": p["discriminator"], "num_classes": int(num_classes or self._num_classes(None)),
                "params": {k: self.params[k] for k in self.WARMUP_KEYS}, "seed": int(seed)}

    def planned_queries(self, num_classes: int) -> dict:
        p = self.params
        return {"setup": p["tacgan_steps"] * p["n_dis"] * p["batch_size"] + num_classes * p["per_class"]
                + p["holdout"], "per_class": 0}

    def _num_classes(self, oracle: BlackBox | None) -> int:
        c = self.params["num_classes"] or (oracle.num_classes if oracle is not None else None)
        if not c:
            raise ValueError("lokt needs the number of classes: the oracle does not say (num_classes is None); pass "
                             "num_classes=...")
        return int(c)

    def _networks(self, num_classes: int) -> tuple[ConditionalGenerator, ClassDiscriminator]:
        G = ConditionalGenerator(self.prior.generator, num_classes)
        dim = self.prior.generator.dim
        D = ClassDiscriminator(num_classes, dim, "instance", init=self.discriminator)
        return G.to(self.prior.device), D.to(self.prior.device)

    def conditional_generator(self, setup: dict) -> ConditionalGenerator:
        """The trained G(z, y) of a setup, in eval mode, without gradients on its weights."""
        G = ConditionalGenerator(self.prior.generator, setup["num_classes"])
        G.load_state_dict(setup["generator"])
        return G.to(self.prior.device).eval().requires_grad_(False)

    def surrogate_models(self, setup: dict, *, discriminator: bool | None = None) -> list[nn.Module]:
        """The setup's surrogates (DenseNets, then D's class head unless ``discriminator`` is False), eval mode;
        each maps images to class logits."""
        p, c = self.params, setup["num_classes"]
        use_d = p["use_discriminator"] if discriminator is None else discriminator
        nets: list[nn.Module] = []
        for state in setup["surrogates"]:
            net = DenseNet(c, p["surrogate_growth"], tuple(p["surrogate_layers"]))
            net.load_state_dict(state)
            nets.append(net)
        if use_d:
            D = ClassDiscriminator(c, setup["discriminator_arch"]["dim"], setup["discriminator_arch"]["norm"])
            D.load_state_dict(setup["discriminator"])
            nets.append(_ClassHead(D))
        return [n.to(self.prior.device).eval().requires_grad_(False) for n in nets]

    # --------------------------------------------------------------------------------------------- T-ACGAN
    def warmup(self, seed: int = 0, *, num_classes: int | None = None) -> dict:
        """The warm-up without class loss (no query): G and D states after ``warmup_steps`` GAN iterations.

        A pure function of (prior, public images, discriminator init, :attr:`WARMUP_KEYS`, seed, classes); memoised
        on the instance; :meth:`warmup_config` is its cache configuration."""
        c = int(num_classes or self._num_classes(None))
        if (seed, c) in self._warm:
            return self._warm[(seed, c)]
        start = time.perf_counter()
        gen = class_generator(seed, -1, salt=11)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
            G, D = self._networks(c)
        opt_g, opt_d = self._optimizers(G, D)
        history = self._train_gan(G, D, opt_g, opt_d, self.params["warmup_steps"], gen, oracle=None, desc="warm-up")
        out = {"generator": _cpu_state(G), "discriminator": _cpu_state(D), "opt_g": opt_g.state_dict(),
               "opt_d": opt_d.state_dict(), "num_classes": c, "history": history,
               "steps": self.params["warmup_steps"], "seconds": time.perf_counter() - start}
        self._warm[(seed, c)] = out
        return out

    def _optimizers(self, G: nn.Module, D: nn.Module):
        p = self.params
        return (torch.optim.Adam(G.parameters(), lr=p["lr"], betas=tuple(p["betas"])),
                torch.optim.Adam(D.parameters(), lr=p["lr"], betas=tuple(p["betas"])))

    def _real(self, n: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(self.public), (n,), generator=gen)
        x = self.public[idx]
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x.to(self.prior.device)

    def _fake(self, G: ConditionalGenerator, n: int, gen: torch.Generator):
        z = self.prior.sample(n, gen).to(self.prior.device)
        y = torch.randint(0, G.num_classes, (n,), generator=gen).to(self.prior.device)
        return G(z, y), y

    def _train_gan(self, G, D, opt_g, opt_d, steps: int, gen: torch.Generator, *, oracle: BlackBox | None,
                   desc: str) -> list[dict]:
        """``steps`` T-ACGAN iterations; with an oracle the class losses are on (its labels of every D-step fake)."""
        p = self.params
        alpha, bs = (p["alpha"] if oracle is not None else 0.0), p["batch_size"]
        G.train(), D.train()
        history, acc = [], {"g": 0.0, "d": 0.0, "hit": 0.0, "agree": 0.0, "n": 0}
        for step in tqdm(range(steps), desc=f"lokt {desc}", disable=not self.progress):
            fake, y = self._fake(G, bs, gen)
            adv, cls = D(fake)
            loss_g = F.softplus(-adv).mean()
            if oracle is not None:
                loss_g = loss_g + alpha * F.cross_entropy(cls, y)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            for _ in range(p["n_dis"]):
                real = self._real(bs, gen)
                with torch.no_grad():
                    fake, y = self._fake(G, bs, gen)
                adv_fake, cls_fake = D(fake)
                adv_real, _ = D(real)
                loss_d = F.softplus(-adv_real).mean() + F.softplus(adv_fake).mean()
                if oracle is not None:
                    labels = oracle(fake).to(fake.device)
                    loss_d = loss_d + alpha * F.cross_entropy(cls_fake, labels)
                    acc["hit"] += float((labels == y).float().mean())
                    acc["agree"] += float((cls_fake.argmax(1) == labels).float().mean())
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                acc["n"] += 1
                acc["d"] += loss_d.item()
            if not (torch.isfinite(loss_g) and torch.isfinite(loss_d)):
                raise FloatingPointError(f"lokt {desc} diverged at step {step}: G loss {loss_g.item()}, D loss "
                                         f"{loss_d.item()}")
            acc["g"] += loss_g.item()
            if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
                n = max(acc["n"], 1)
                history.append({"step": step + 1, "loss_g": acc["g"] * p["n_dis"] / n, "loss_d": acc["d"] / n,
                                "target_hit": acc["hit"] / n, "d_agreement": acc["agree"] / n})
                acc = {"g": 0.0, "d": 0.0, "hit": 0.0, "agree": 0.0, "n": 0}
        G.eval(), D.eval()
        return history

    # ---------------------------------------------------------------------------------------------- setup
    def setup(self, oracle, *, seed: int = 0, warm: dict | None = None) -> dict:
        """T-ACGAN (after the warm-up; pass a cached ``warm`` from :meth:`warmup` to skip it), the oracle-labelled
        synthetic set, the surrogates, and their agreement with the target on held-out generated images.

        Returns CPU state dicts (``generator``, ``discriminator``, ``surrogates``), ``discriminator_arch``,
        ``num_classes``, ``diagnostics`` (queries and seconds per phase, agreement, class balance, training
        histories), ``queries`` and ``seconds`` (this call's; a cached warm-up's own time is in the diagnostics)."""
        oracle = self.check(oracle)
        p = self.params
        c = self._num_classes(oracle)
        start, q0 = time.perf_counter(), oracle.queries
        warm = warm if warm is not None else self.warmup(seed, num_classes=c)
        if warm["num_classes"] != c or warm["steps"] != p["warmup_steps"]:
            raise ValueError(f"the warm-up given was made for {warm['num_classes']} classes and {warm['steps']} "
                             f"steps; this attack has {c} classes and warmup_steps={p['warmup_steps']}")
        G, D = self._networks(c)
        G.load_state_dict(warm["generator"]), D.load_state_dict(warm["discriminator"])
        opt_g, opt_d = self._optimizers(G, D)
        opt_g.load_state_dict(warm["opt_g"]), opt_d.load_state_dict(warm["opt_d"])
        gen = class_generator(seed, -1, salt=12)
        seconds = {"warmup": float(warm["seconds"])}

        t = time.perf_counter()
        history = self._train_gan(G, D, opt_g, opt_d, p["tacgan_steps"], gen, oracle=oracle, desc="T-ACGAN")
        q_tacgan, seconds["tacgan"] = oracle.queries - q0, time.perf_counter() - t

        t, q1 = time.perf_counter(), oracle.queries
        z, pseudo = self.prior.sample(c * p["per_class"], gen), torch.arange(c).repeat_interleave(p["per_class"])
        keep = len(z) * 3 * IMAGE_SIZE * IMAGE_SIZE <= KEEP_IMAGES_BYTES
        labels, images = self._label(oracle, G, z, pseudo, keep=keep)
        q_label, seconds["labelling"] = oracle.queries - q1, time.perf_counter() - t

        t = time.perf_counter()
        surrogates = []
        for k in range(p["surrogates"]):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
                net = DenseNet(c, p["surrogate_growth"], tuple(p["surrogate_layers"])).to(self.prior.device)
            self._train_surrogate(net, G, z, pseudo, labels, images, gen, k)
            surrogates.append(_cpu_state(net))
        seconds["surrogates"] = time.perf_counter() - t

        t, q2 = time.perf_counter(), oracle.queries
        hz = self.prior.sample(p["holdout"], gen)
        hy = torch.randint(0, c, (p["holdout"],), generator=gen)
        h_labels, _ = self._label(oracle, G, hz, hy)
        q_holdout = oracle.queries - q2
        setup = {"generator": _cpu_state(G), "discriminator": _cpu_state(D), "surrogates": surrogates,
                 "discriminator_arch": {"dim": D.dim, "norm": D.norm}, "num_classes": c}
        agreement = self._agreement(setup, G, hz, hy, h_labels)
        seconds["holdout"] = time.perf_counter() - t
        counts = torch.bincount(labels, minlength=c)
        diagnostics = {
            "queries_tacgan": q_tacgan, "queries_labelling": q_label, "queries_holdout": q_holdout,
            "seconds_phases": seconds, **agreement,
            "labelled_images": len(labels), "labelled_distinct": int((counts > 0).sum()),
            "labelled_largest_share": float(counts.max()) / max(len(labels), 1),
            "labelled_hit": float((labels == pseudo).float().mean()),  # how class-conditional G is, by the target
            "tacgan_history": history, "warmup_history": warm["history"]}
        return {**setup, "diagnostics": diagnostics, "queries": oracle.queries - q0,
                "seconds": time.perf_counter() - start}

    def _label(self, oracle: BlackBox, G: ConditionalGenerator, z: torch.Tensor, y: torch.Tensor, *,
               keep: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The oracle's labels of G(z, y) (``len(z)`` queries, in batches of ``query_batch``), and the images as
        uint8 when ``keep`` (else None)."""
        out, images, b = [], [], self.params["query_batch"]
        for i in tqdm(range(0, len(z), b), desc="lokt labelling", disable=not self.progress, leave=False):
            with torch.no_grad():
                x = G(z[i:i + b].to(self.prior.device), y[i:i + b].to(self.prior.device)).clamp(0, 1)
            out.append(oracle(x).long().cpu())
            if keep:
                images.append(x.mul(255).round().to(torch.uint8).cpu())
        labels = torch.cat(out) if out else torch.empty(0, dtype=torch.long)
        return labels, (torch.cat(images) if keep and images else None)

    def _train_surrogate(self, net: DenseNet, G: ConditionalGenerator, z, pseudo, labels, images, gen,
                         k: int) -> None:
        """Official recipe: SGD + cosine schedule, loss 0.5 CE(clean) + 0.5 CE(augmented). The images are the
        labelled ones (kept as uint8 when they fit :data:`KEEP_IMAGES_BYTES`), else re-generated from the stored
        latents each step as officially (G is fixed, in eval mode: the same images)."""
        p = self.params
        opt = torch.optim.SGD(net.parameters(), lr=p["surrogate_lr"], momentum=p["surrogate_momentum"],
                              weight_decay=p["surrogate_weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, p["surrogate_steps"]))
        net.train()
        dev = self.prior.device
        for _ in tqdm(range(p["surrogate_steps"]), desc=f"lokt surrogate {k}", disable=not self.progress):
            idx = torch.randint(0, len(z), (p["surrogate_batch"],), generator=gen)
            with torch.no_grad():
                if images is not None:
                    x = images[idx].to(dev).float().div(255.0)
                else:
                    x = G(z[idx].to(dev), pseudo[idx].to(dev)).clamp(0, 1)
                x_aug = augment(x, gen, jitter_prob=0.5)
            y = labels[idx].to(dev)
            loss = 0.5 * F.cross_entropy(net(x), y) + 0.5 * F.cross_entropy(net(x_aug), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()

    def _agreement(self, setup: dict, G, z, y, labels) -> dict:
        """Top-1 agreement with the oracle's labels on held-out generated images: each surrogate, D's head, the
        ensembles with and without D, and two references (the most common label's share; G's class hit rate)."""
        with torch.no_grad():
            x = G(z.to(self.prior.device), y.to(self.prior.device)).clamp(0, 1)
            nets = self.surrogate_models(setup, discriminator=True)
            probs = [torch.softmax(n(x).float(), 1).cpu() for n in nets]
        agree = [float((pr.argmax(1) == labels).float().mean()) for pr in probs]
        out = {"agreement_surrogates": agree[:-1], "agreement_discriminator": agree[-1],
               "agreement_majority": float(torch.bincount(labels).max()) / max(len(labels), 1),
               "holdout_hit": float((labels == y).float().mean()), "holdout": len(labels)}
        if len(probs) > 1:
            out["agreement_ensemble_without_d"] = float((torch.stack(probs[:-1]).mean(0).argmax(1) == labels)
                                                        .float().mean())
        out["agreement_ensemble"] = float((torch.stack(probs).mean(0).argmax(1) == labels).float().mean()) \
            if self.params["use_discriminator"] or len(probs) == 1 else out["agreement_ensemble_without_d"]
        return out

    # ------------------------------------------------------------------------------------------ one class
    def attack_class(self, oracle, target: int, setup: dict, *, seed: int = 0) -> AttackResult:
        """White-box phase on the surrogates only: ``top_k`` latents, Adam on the max-margin loss of two augmented
        views per surrogate. No query to the oracle."""
        oracle = self.check(oracle)
        p = self.params
        if not 0 <= target < setup["num_classes"]:
            raise ValueError(f"target class {target} out of range 0..{setup['num_classes'] - 1}")
        start, q0 = time.perf_counter(), oracle.queries
        gen = class_generator(seed, target)
        G, nets = self.conditional_generator(setup), self.surrogate_models(setup)
        dev = self.prior.device
        z = self.prior.sample(p["top_k"], gen).to(dev).requires_grad_(True)
        y = torch.full((p["top_k"],), int(target), dtype=torch.long, device=dev)
        initial = self._ensemble_score(G, nets, z.detach(), y)
        opt = torch.optim.Adam([z], lr=p["attack_lr"])
        history, every = [], max(1, p["attack_steps"] // 10)
        for step in range(p["attack_steps"]):
            x = G(z, y)
            loss = 0.0
            for net in nets:  # two augmented views in one batch (eval mode: the views stay independent)
                views = torch.cat([augment(x, gen), augment(x, gen)])
                loss = loss + 2 * max_margin_loss(net(views), y.repeat(2))
            loss = loss / len(nets)
            (z.grad,) = torch.autograd.grad(loss, [z])
            opt.step()
            if (step + 1) % every == 0 or step + 1 == p["attack_steps"]:
                s = self._ensemble_score(G, nets, z.detach(), y)
                history.append({"step": step + 1, "loss": float(loss.detach()), "best": float(s.max()),
                                "mean": float(s.mean())})
        z = z.detach()
        scores = self._ensemble_score(G, nets, z, y)
        order = torch.argsort(scores, descending=True)
        z, scores = z[order].cpu(), scores[order]
        with torch.no_grad():
            images = G(z.to(dev), y).clamp(0, 1).cpu()
        if oracle.queries != q0:  # the white-box phase must never reach the target
            raise RuntimeError("lokt's white-box phase queried the oracle")
        diagnostics = {k: setup["diagnostics"][k] for k in (
            "agreement_surrogates", "agreement_discriminator", "agreement_ensemble", "agreement_majority",
            "holdout_hit", "labelled_hit", "labelled_distinct", "labelled_largest_share", "queries_tacgan",
            "queries_labelling", "queries_holdout")}
        diagnostics.update(ensemble_before=float(initial.mean()), ensemble_after=float(scores.mean()))
        return AttackResult(self.name, int(target), images, z, scores, 0, time.perf_counter() - start,
                            float(initial.max()), float(scores.max()), "generations", int(p["attack_steps"]),
                            int(setup.get("queries", 0)), float(setup.get("seconds", 0.0)), history,
                            dict(self.params), diagnostics)

    def _ensemble_score(self, G, nets, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The ensemble's mean softmax probability of ``y`` on the clean G(z, y): the scores of a result."""
        with torch.no_grad():
            x = G(z, y).clamp(0, 1)
            probs = torch.stack([torch.softmax(n(x).float(), 1) for n in nets]).mean(0)
        return probs.gather(1, y[:, None]).squeeze(1).cpu()


class _ClassHead(nn.Module):
    """D's class head as a classifier (images -> class logits)."""

    def __init__(self, D: ClassDiscriminator):
        super().__init__()
        self.D = D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.D(x)[1]


def _cpu_state(module: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _check_public(public) -> torch.Tensor:
    """The attacker's public images: uint8 or float in [0, 1], ``[N, 3, 64, 64]``, at least one."""
    if public is None:
        raise ValueError("LOKT needs the attacker's public images (its GAN's real data): LOKT(prior, public=images), "
                         "images [N, 3, 64, 64] as uint8 or float in [0, 1]")
    if not isinstance(public, torch.Tensor):
        raise TypeError(f"public must be a tensor of images [N, 3, 64, 64], got {type(public).__name__}")
    if public.dim() != 4 or tuple(public.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE) or len(public) < 1:
        raise ValueError(f"public must be images [N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}] with N >= 1, got shape "
                         f"{tuple(public.shape)}")
    if public.dtype != torch.uint8:
        if not public.is_floating_point():
            raise ValueError(f"public images must be uint8 or float in [0, 1], got {public.dtype}")
        if not torch.isfinite(public).all() or public.min() < 0 or public.max() > 1:
            raise ValueError("public float images must be finite and lie in [0, 1]")
    return public.detach().cpu()
