"""Transformations as threat models: shifts, rotations, scaling, elastic deformation, noise and blur, applied to
whole batches (B, C, H, W) in [0,1] on the tensors' own device, deterministic by seed.

Conventions (every function returns a new tensor of the input's shape, in [0,1]):
  - translate: integer pixels; dx > 0 moves the content right, dy > 0 down; uncovered pixels get `fill`
    (0 = black, MNIST's background); `translate_circular` wraps around instead (torch.roll).
  - rotate: degrees, counter-clockwise as displayed (+90 equals torch.rot90(x, 1, (2, 3))), about the centre.
  - scale: a zoom factor about the centre (0.5 halves the content), bilinear, `fill` outside.
  - elastic: Simard, Steinkraus & Platt 2003: per-pixel displacements drawn from U(-1, 1), smoothed by a
    Gaussian of std `sigma` and multiplied by `alpha` (pixels); bilinear resampling.
  - noise: additive Gaussian noise of std `magnitude` (fraction of the pixel range), clipped to [0,1].
  - blur: Gaussian blur of std `magnitude` pixels.
Random parameters are drawn on a CPU torch.Generator and then moved to the device, so a seed gives the same
transformation on CPU and CUDA.
"""
from __future__ import annotations

import math
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F

from robustcnn.errors import UsageError, check_choice


class Transform(str, Enum):
    """Transformations with a magnitude (the threat models beside L-inf/L2 balls)."""

    TRANSLATE = "translate"
    TRANSLATE_CIRCULAR = "translate_circular"
    ROTATE = "rotate"
    SCALE = "scale"
    ELASTIC = "elastic"
    NOISE = "noise"
    BLUR = "blur"


UNITS = {
    Transform.TRANSLATE: "pixels (integer shift in x and y, each within +-m)",
    Transform.TRANSLATE_CIRCULAR: "pixels (circular shift in x and y, each within +-m)",
    Transform.ROTATE: "degrees (angle within +-m)",
    Transform.SCALE: "zoom factor within [1-m, 1+m]",
    Transform.ELASTIC: "alpha in pixels (Simard et al. 2003; sigma fixed)",
    Transform.NOISE: "Gaussian std (fraction of the pixel range)",
    Transform.BLUR: "Gaussian blur std (pixels)",
}
GEOMETRIC = {Transform.TRANSLATE, Transform.TRANSLATE_CIRCULAR, Transform.ROTATE, Transform.SCALE, Transform.ELASTIC}
RANDOM = GEOMETRIC | {Transform.NOISE}  # blur at a fixed std has no random part: consistency is 1 by definition


def as_transform(name: str | Transform) -> Transform:
    if isinstance(name, Transform):
        return name
    return Transform(check_choice("transformation", str(name), [t.value for t in Transform]))


def check_images(x: torch.Tensor, what: str, *, min_size: int = 1) -> None:
    """A batch (B, C, H, W); geometric transformations need at least 2x2 pixels to have a centre to turn about."""
    if x.dim() != 4:
        raise UsageError(f"{what} needs images of shape (B, C, H, W), got a tensor of shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise UsageError(f"{what} does not apply to {x.shape[-2]}x{x.shape[-1]}-pixel images; it needs at least "
                         f"{min_size}x{min_size}")


def check_magnitude(transform: Transform, magnitude: float, x: torch.Tensor | None = None) -> None:
    if not math.isfinite(magnitude) or magnitude < 0:
        raise UsageError(f"{transform.value} magnitude must be a finite number >= 0, got {magnitude}")
    if transform in (Transform.TRANSLATE, Transform.TRANSLATE_CIRCULAR):
        if magnitude != int(magnitude):
            raise UsageError(f"{transform.value} magnitude is a whole number of pixels, got {magnitude}")
        if x is not None and magnitude >= min(x.shape[-2:]):
            raise UsageError(f"a shift of {int(magnitude)} pixels moves a {x.shape[-1]}-pixel image out of view")
    if transform == Transform.ROTATE and magnitude > 180:
        raise UsageError(f"rotate magnitude is at most 180 degrees, got {magnitude}")
    if transform == Transform.SCALE and magnitude >= 1:
        raise UsageError(f"scale magnitude m gives zoom factors in [1-m, 1+m] and must be below 1, got {magnitude}")


def generator(seed: int, *salt: str | int) -> torch.Generator:
    """A CPU generator seeded by `seed` and a salt (e.g. a corruption's name), stable across runs and devices."""
    import zlib

    def text(v: object) -> str:  # 2 and 2.0 name the same magnitude
        return repr(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    mix = zlib.crc32("/".join(text(v) for v in (seed, *salt)).encode())
    return torch.Generator().manual_seed(mix)


def _draw(shape: tuple[int, ...], gen: torch.Generator, device: torch.device, low: float = 0.0,
          high: float = 1.0) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * (high - low) + low).to(device)


# ------------------------------------------------------------------ primitives
def translate(x: torch.Tensor, dx: int | torch.Tensor, dy: int | torch.Tensor, *, fill: float = 0.0,
              circular: bool = False, edge: bool = False) -> torch.Tensor:
    """Shift every image by whole pixels (dx, dy: ints, or (B,) integer tensors, one shift per image). Uncovered
    pixels get `fill`, or wrap around (circular), or repeat the nearest edge pixel (edge)."""
    check_images(x, "translate")
    b, c, h, w = x.shape
    dx, dy = (torch.as_tensor(d, device=x.device).long().expand(b) for d in (dx, dy))
    rows = torch.arange(h, device=x.device)[None, :] - dy[:, None]  # (B, H): the source row of each output row
    cols = torch.arange(w, device=x.device)[None, :] - dx[:, None]  # (B, W)
    if circular:
        rows, cols = rows % h, cols % w
    valid = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[:, None, None, :]
    out = x.gather(2, rows.clamp(0, h - 1)[:, None, :, None].expand(b, c, h, w))
    out = out.gather(3, cols.clamp(0, w - 1)[:, None, None, :].expand(b, c, h, w))
    return out if circular or edge else torch.where(valid, out, torch.full_like(out, fill))


def warp(x: torch.Tensor, matrix: torch.Tensor, *, fill: float = 0.0, offset: torch.Tensor | None = None,
         padding: str = "zeros") -> torch.Tensor:
    """Resample each image at source = matrix @ p (+ offset), bilinear. p are output pixel coordinates relative to
    the image centre (x right, y down, in pixels); matrix (B, 2, 3) (the last column a translation); offset
    (B, 2, H, W) an extra per-pixel displacement in pixels (x then y). Outside the image: `fill` (padding
    'zeros'), or the image's reflection / border ('reflection' / 'border')."""
    b, c, h, w = x.shape
    norm = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=x.dtype)  # pixels from the centre -> [-1, 1]
    theta = matrix.to(x.dtype) * norm[None, :, None]
    theta[:, :, :2] = theta[:, :, :2] / norm[None, None, :]
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)  # (B, H, W, 2) in normalized coordinates
    if offset is not None:
        grid = grid + offset.permute(0, 2, 3, 1).to(x.dtype) * norm
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode=padding, align_corners=False) + fill
    return out.clamp_(0, 1)


def affine_matrix(b: int, *, angle: torch.Tensor | float = 0.0, zoom: torch.Tensor | float = 1.0,
                  shear: torch.Tensor | float = 0.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 2, 3) source-from-output matrices: rotate by `angle` degrees counter-clockwise (as displayed), zoom by
    `zoom` (content grows for zoom > 1), shear the content by `shear` radians along x; about the centre."""
    a, z, s = (torch.as_tensor(v, dtype=torch.float32, device=device).expand(b) for v in (angle, zoom, shear))
    rad = torch.deg2rad(a)
    cos, sin = torch.cos(rad), torch.sin(rad)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # inverse rotation, y down
    shr = torch.zeros(b, 2, 2, device=device)
    shr[:, 0, 0], shr[:, 0, 1], shr[:, 1, 1] = 1.0, -torch.sin(s), torch.cos(s)
    lin = rot @ shr / z[:, None, None]
    return torch.cat([lin, torch.zeros(b, 2, 1, device=device)], dim=2)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, device: torch.device | str = "cpu") -> torch.Tensor:
    radius = max(1, int(truncate * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise 2-D correlation with one (kh, kw) kernel, reflecting at the border (edge-replicating when the
    kernel is wider than the image allows)."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
    mode = "reflect" if max(pad[:2]) < w and max(pad[2:]) < h else "replicate"
    padded = F.pad(x.reshape(b * c, 1, h, w), pad, mode=mode)
    return F.conv2d(padded, kernel.to(x)[None, None]).reshape(b, c, h, w)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur (std `sigma` pixels, kernel radius truncate*sigma), reflecting at the border."""
    if sigma <= 0:
        return x.clone()
    k = gaussian_kernel1d(sigma, truncate, x.device)
    return filter2d(filter2d(x, k[None, :]), k[:, None])


def elastic(x: torch.Tensor, alpha: float, sigma: float, gen: torch.Generator, *, fill: float = 0.0) -> torch.Tensor:
    """Simard et al. 2003: displacement = alpha * Gaussian_sigma * U(-1, 1), per pixel and image."""
    check_images(x, "elastic", min_size=2)
    b, _, h, w = x.shape
    field = _draw((b, 2, h, w), gen, x.device, -1.0, 1.0)
    field = gaussian_blur(field, sigma) * alpha if sigma > 0 else field * alpha
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=x.device).expand(b, 2, 3)
    return warp(x, eye, offset=field, fill=fill)


# ------------------------------------------------------------------ threat models
def apply_transform(x: torch.Tensor, transform: str | Transform, magnitude: float, gen: torch.Generator, *,
                    fill: float = 0.0, elastic_sigma: float = 4.0) -> torch.Tensor:
    """One random transformation per image, of magnitude up to `magnitude` (see UNITS): shifts drawn uniformly
    from the integer grid [-m, m]^2, angles from U(-m, m), zoom factors from U(1-m, 1+m); elastic, noise and blur
    at exactly `magnitude`."""
    t = as_transform(transform)
    check_images(x, t.value, min_size=2 if t in GEOMETRIC else 1)
    check_magnitude(t, magnitude, x)
    b = len(x)
    if t in (Transform.TRANSLATE, Transform.TRANSLATE_CIRCULAR):
        k = int(magnitude)
        d = torch.randint(-k, k + 1, (2, b), generator=gen).to(x.device)
        return translate(x, d[0], d[1], fill=fill, circular=t == Transform.TRANSLATE_CIRCULAR)
    if t == Transform.ROTATE:
        return warp(x, affine_matrix(b, angle=_draw((b,), gen, x.device, -magnitude, magnitude), device=x.device),
                    fill=fill)
    if t == Transform.SCALE:
        zoom = _draw((b,), gen, x.device, 1 - magnitude, 1 + magnitude)
        return warp(x, affine_matrix(b, zoom=zoom, device=x.device), fill=fill)
    if t == Transform.ELASTIC:
        return elastic(x, magnitude, elastic_sigma, gen, fill=fill)
    if t == Transform.NOISE:
        return (x + magnitude * torch.randn(x.shape, generator=gen).to(x.device)).clamp_(0, 1)
    return gaussian_blur(x, magnitude)


def transform_grid(transform: str | Transform, magnitude: float, steps: int = 31) -> list[dict[str, Any]] | None:
    """Every transformation a grid search tries (Engstrom et al. 2019): all integer shifts in [-m, m]^2, `steps`
    angles in [-m, m], `steps` zoom factors in [1-m, 1+m]; None where a transformation has no grid."""
    t = as_transform(transform)
    check_magnitude(t, magnitude)
    if t in (Transform.TRANSLATE, Transform.TRANSLATE_CIRCULAR):
        k = int(magnitude)
        return [{"dx": dx, "dy": dy} for dy in range(-k, k + 1) for dx in range(-k, k + 1)]
    if t == Transform.ROTATE:
        return [{"angle": float(a)} for a in torch.linspace(-magnitude, magnitude, steps if magnitude else 1)]
    if t == Transform.SCALE:
        return [{"zoom": float(z)} for z in torch.linspace(1 - magnitude, 1 + magnitude, steps if magnitude else 1)]
    return None


def apply_grid_point(x: torch.Tensor, transform: str | Transform, point: dict[str, Any], *,
                     fill: float = 0.0) -> torch.Tensor:
    """The same transformation (one point of `transform_grid`) applied to every image."""
    t = as_transform(transform)
    check_images(x, t.value, min_size=2)
    if t in (Transform.TRANSLATE, Transform.TRANSLATE_CIRCULAR):
        return translate(x, point["dx"], point["dy"], fill=fill, circular=t == Transform.TRANSLATE_CIRCULAR)
    return warp(x, affine_matrix(len(x), angle=point.get("angle", 0.0), zoom=point.get("zoom", 1.0),
                                 device=x.device), fill=fill)
