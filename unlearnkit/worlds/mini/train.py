"""Train the mini world from scratch: tokenizer, VAE, mini evaluators, mini CLIP, then UNet + text encoder.

    python -m unlearnkit.worlds.mini.train [--out DIR] [--seed 0] [--unet-minutes 16]

Everything is deterministic given the seed up to floating-point scheduling; the quality report
(``python -m unlearnkit.worlds.mini.quality``) measures what the shipped weights generate.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from unlearnkit.worlds.mini import models
from unlearnkit.worlds.mini.render import make_dataset
from unlearnkit.worlds.mini.vocab import build_vocabulary

DEFAULT_OUT = Path(__file__).parent / "weights"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def train_vae(images: torch.Tensor, minutes: float, seed: int, batch: int = 64, kl_weight: float = 1e-6):
    """VAE with an MSE reconstruction + small KL term (the LDM recipe without the GAN/perceptual parts)."""
    torch.manual_seed(seed)
    vae = models.build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    deadline, step = time.time() + 60 * minutes, 0
    est_total = int(minutes * 60 / 0.22)
    while time.time() < deadline:
        x = images[torch.randint(len(images), (batch,), generator=g)] * 2 - 1
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = F.mse_loss(rec, x) + kl_weight * post.kl().mean()
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, est_total, 1e-3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0:
            log(f"vae step {step} loss {loss.item():.5f}")
        step += 1
    vae.eval()
    return vae, step


@torch.no_grad()
def encode_moments(vae, images: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(images), batch):
        dist = vae.encode(images[i:i + batch] * 2 - 1).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruct(vae, means: torch.Tensor, batch: int = 512) -> torch.Tensor:
    out = [vae.decode(means[i:i + batch]).sample for i in range(0, len(means), batch)]
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


_BLUR = torch.tensor([1.0, 2.0, 1.0])
_BLUR = (_BLUR[:, None] * _BLUR[None, :] / 16).expand(3, 1, 3, 3).contiguous()


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Softening, light noise and brightness jitter so evaluators transfer from drawn to generated images (which
    are softer than the VAE's reconstructions of drawn ones)."""
    soft = torch.rand((x.shape[0], 1, 1, 1), generator=g)
    x = torch.lerp(x, F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), _BLUR, groups=3), soft)
    x = x + 0.03 * torch.randn(x.shape, generator=g) * torch.rand((x.shape[0], 1, 1, 1), generator=g)
    x = x + 0.04 * (torch.rand((x.shape[0], 1, 1, 1), generator=g) - 0.5)
    return x.clamp(0, 1)


def evaluator_loss(outputs: dict, labels: dict, idx: torch.Tensor) -> torch.Tensor:
    loss = 0.0
    for head, logits in outputs.items():
        target = labels[head][idx]
        if head == "unsafe":
            loss = loss + F.binary_cross_entropy_with_logits(logits, target)
        else:
            loss = loss + F.cross_entropy(logits, target)
    return loss


def _mixed_batch(raw, recon, g, batch):
    """Half drawn images, half their VAE reconstructions (what generated images look like), augmented."""
    idx = torch.randint(len(recon), (batch,), generator=g)
    idx_raw = torch.randint(len(raw), (batch,), generator=g)
    use_recon = torch.rand(batch, generator=g) < 0.5
    idx = torch.where(use_recon, idx, idx_raw)
    x = torch.where(use_recon.view(-1, 1, 1, 1), recon[idx.clamp(max=len(recon) - 1)], raw[idx])
    return idx, augment(x, g)


def train_evaluators(raw: torch.Tensor, recon: torch.Tensor, labels: dict, steps: int, seed: int, batch: int = 128,
                     names=tuple(models.EVALUATORS)):
    torch.manual_seed(seed)
    nets = {name: models.build_evaluator(name) for name in names}
    params = [p for net in nets.values() for p in net.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        idx, x = _mixed_batch(raw, recon, g, batch)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, 2e-3, warmup=50)
        loss = sum(evaluator_loss(net(x), labels, idx) for net in nets.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0:
            log(f"evaluators step {step} loss {loss.item():.4f}")
    for net in nets.values():
        net.eval()
    return nets


def train_clip(raw: torch.Tensor, recon: torch.Tensor, input_ids: torch.Tensor, vocab_size: int, steps: int, seed: int,
               batch: int = 128):
    torch.manual_seed(seed)
    clip = models.build_clip(vocab_size)
    opt = torch.optim.AdamW(clip.parameters(), lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed + 2)
    for step in range(steps):
        idx, x = _mixed_batch(raw, recon, g, batch)
        x = x * 2 - 1
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, 1e-3, warmup=100)
        out = clip(input_ids=input_ids[idx], pixel_values=x, return_loss=True)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if step % 200 == 0:
            log(f"clip step {step} loss {out.loss.item():.4f}")
    clip.eval()
    return clip


def train_diffusion(means, stds, input_ids, tokenizer_len: int, scaling: float, minutes: float, seed: int,
                    batch: int = 128, lr: float = 6e-4, ema_decay: float = 0.999):
    """UNet + text encoder trained jointly on ε-prediction; captions already carry the CFG dropout."""
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = models.build_unet()
    text_encoder = CLIPTextModel(models.text_encoder_config(tokenizer_len))
    ddpm, _ = models.build_schedulers()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    g = torch.Generator().manual_seed(seed + 3)
    est_total = int(minutes * 60 / 0.3)
    deadline, step, t0 = time.time() + 60 * minutes, 0, time.time()
    while time.time() < deadline:
        idx = torch.randint(len(means), (batch,), generator=g)
        latents = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)) * scaling
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, ddpm.config.num_train_timesteps, (batch,), generator=g)
        x_t = ddpm.add_noise(latents, noise, t)
        cond = text_encoder(input_ids[idx])[0]
        loss = F.mse_loss(unet(x_t, t, encoder_hidden_states=cond).sample, noise)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, est_total, lr, warmup=200)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for src, dst in ((unet, ema_unet), (text_encoder, ema_text)):
                for p_ema, p in zip(dst.parameters(), src.parameters()):
                    p_ema.lerp_(p, 1 - decay)
        if step % 250 == 0:
            log(f"diffusion step {step} loss {loss.item():.4f} ({(time.time() - t0) / max(step, 1):.3f} s/step)")
        step += 1
    return ema_unet.eval(), ema_text.eval(), step


def _declare_float32(config_path: Path) -> None:
    """transformers loads a model in its config's ``dtype``; declare float32 so plain
    ``StableDiffusionPipeline.from_pretrained(folder)`` (no dtype) runs the text encoder in the UNet's dtype."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def save_world(out: Path, tokenizer, vae, unet, text_encoder, evaluators, clip, meta: dict) -> None:
    """Write the pipeline in diffusers layout (fp16 safetensors) plus evaluators and the mini CLIP."""
    pipe = models.assemble_pipeline(unet, vae, text_encoder, tokenizer)
    pipe.to(torch.float16).save_pretrained(out / "pipeline", safe_serialization=True)
    _declare_float32(out / "pipeline" / "text_encoder" / "config.json")   # fp16 on disk, float32 when loaded
    (out / "evaluators").mkdir(parents=True, exist_ok=True)
    for name, net in evaluators.items():
        save_file({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()},
                  out / "evaluators" / f"{name}.safetensors")
    clip.to(torch.float16).save_pretrained(out / "clip", safe_serialization=True)
    _declare_float32(out / "clip" / "config.json")
    (out / "training.json").write_text(json.dumps(meta, indent=2))


def retrain_evaluators(out: Path, names: list[str], steps: int, seed: int, n_train: int) -> None:
    """Retrain some evaluators against the shipped VAE (the pipeline stays as it is) and update training.json."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(out / "pipeline" / "vae"), dtype=torch.float32).eval()
    data = make_dataset(n_train, seed=seed, p_empty_caption=0.1)
    raw = to_tensor(data.images)
    labels = {k: torch.from_numpy(v).float() if k == "unsafe" else torch.from_numpy(v).long()
              for k, v in data.labels.items()}
    means, _ = encode_moments(vae, raw[:12000])
    recon = reconstruct(vae, means)
    t = time.time()
    nets = train_evaluators(raw, recon, labels, steps, seed, names=tuple(names))
    for name, net in nets.items():
        save_file({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()},
                  out / "evaluators" / f"{name}.safetensors")
    meta = json.loads((out / "training.json").read_text())
    meta.setdefault("retrained_evaluators", {}).update({n: {"steps": steps, "seconds": round(time.time() - t, 1)}
                                                        for n in names})
    (out / "training.json").write_text(json.dumps(meta, indent=2))
    log(f"retrained {names} in {time.time() - t:.0f} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="weights folder (default: inside the package)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=60000, help="procedural training scenes")
    parser.add_argument("--vae-minutes", type=float, default=3.5)
    parser.add_argument("--evaluator-steps", type=int, default=1000)
    parser.add_argument("--clip-steps", type=int, default=1000)
    parser.add_argument("--unet-minutes", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--retrain-evaluators", nargs="+", choices=sorted(models.EVALUATORS), default=None,
                        help="retrain only these evaluators against the shipped VAE (with --evaluator-steps)")
    args = parser.parse_args(argv)
    if args.retrain_evaluators:
        if args.threads:
            torch.set_num_threads(args.threads)
        retrain_evaluators(args.out, args.retrain_evaluators, args.evaluator_steps, args.seed, args.n_train)
        return
    if args.n_train <= 0:
        parser.error(f"--n-train must be positive, got {args.n_train}")
    if args.threads:
        torch.set_num_threads(args.threads)
    timings, t_start = {}, time.time()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_vocabulary(Path(tempfile.mkdtemp()) / "tokenizer")
    data = make_dataset(args.n_train, seed=args.seed, p_empty_caption=0.1)
    raw = to_tensor(data.images)
    input_ids = tokenizer(data.captions, padding="max_length", max_length=tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids
    labels = {k: torch.from_numpy(v).float() if k == "unsafe" else torch.from_numpy(v).long()
              for k, v in data.labels.items()}
    log(f"rendered {len(raw)} scenes")

    t = time.time()
    vae, vae_steps = train_vae(raw, args.vae_minutes, args.seed)
    means, stds = encode_moments(vae, raw)
    scaling = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling)
    n_recon = min(len(raw), 12000)
    recon = reconstruct(vae, means[:n_recon])
    rec_mse = float(F.mse_loss(recon, raw[:n_recon]))
    timings["vae_s"] = time.time() - t
    log(f"vae: {vae_steps} steps, reconstruction MSE {rec_mse:.5f}, scaling factor {scaling:.4f}")

    t = time.time()
    evaluators = train_evaluators(raw, recon, labels, args.evaluator_steps, args.seed)
    timings["evaluators_s"] = time.time() - t
    t = time.time()
    clip_ids = tokenizer(data.scene_captions, padding="max_length", max_length=tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    clip = train_clip(raw, recon, clip_ids, len(tokenizer), args.clip_steps, args.seed)
    timings["clip_s"] = time.time() - t

    t = time.time()
    unet, text_encoder, unet_steps = train_diffusion(means, stds, input_ids, len(tokenizer), scaling,
                                                     args.unet_minutes, args.seed)
    timings["diffusion_s"] = time.time() - t
    timings["total_s"] = time.time() - t_start
    meta = {"seed": args.seed, "n_train": args.n_train, "vae_steps": vae_steps, "vae_reconstruction_mse": rec_mse,
            "evaluator_steps": args.evaluator_steps, "clip_steps": args.clip_steps, "diffusion_steps": unet_steps,
            "diffusion_batch": 128, "scaling_factor": scaling, "threads": torch.get_num_threads(),
            "timings_s": {k: round(v, 1) for k, v in timings.items()}}
    save_world(out, tokenizer, vae, unet, text_encoder, evaluators, clip, meta)
    log(f"saved to {out}: {json.dumps(meta)}")


if __name__ == "__main__":
    main()
