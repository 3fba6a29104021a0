"""Common corruptions, generated on the fly on tensors: the MNIST-C set for greyscale images (Mu & Gilmer 2019)
and the CIFAR-10-C set for colour images (Hendrycks & Dietterich 2019), five severities each.

    x_c = corrupt(x, "fog", severity=3, seed=0)   # (B, C, H, W) in [0,1] -> the same shape, in [0,1]

Parameters are the published ones (the MNIST-C and CIFAR-10-C generation code), read from the tables below:
greyscale images use MNIST-C's table and colour images CIFAR-10-C's, each falling back to the other where a
corruption has only one. Sizes given in pixels for 28x28 or 32x32 images (elastic, stripe, lines) are scaled with
the image. Where we differ, it is said here and in SUBSTITUTES:
  - frost: the published code blends in one of six photographs of frost, which cannot be shipped or downloaded
    here; a procedural ice texture (a rough plasma fractal) is blended in with the published weights instead.
  - MNIST-C publishes most corruptions at one level only (the default severity of its code, MNIST_C_LEVEL); the
    four without a severity get a scale of our own whose published form is one of the levels: stripe (inverted
    band width, 25 % of the width at severity 3), dotted_line and zigzag (severity = number of strokes; 1 is the
    published), canny_edges (the edge map blended over the image with weight severity/5; 5 is the published).
  - glass blur swaps pixels in a sequential loop in the published code; here a batch-wise gather (see
    imageops.local_shuffle). Motion blur and snow follow ImageMagick's kernel with whole-pixel offsets; pixelate
    down-samples by area averaging and up-samples by nearest neighbour (PIL's BOX filter in the original).
  - spatter: only the "mud" branch (the one MNIST-C uses), coloured (63, 42, 20)/255 on colour images.
Randomness comes from a CPU generator seeded by (seed, corruption name), the same draws at every severity, so a
higher severity changes the parameters only (common random numbers).
"""
from __future__ import annotations

import math
from enum import Enum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustcnn import imageops as ops
from robustcnn.errors import UsageError, check_choice
from robustcnn.transforms import affine_matrix, check_images, filter2d, gaussian_blur, generator, translate, warp


class CommonCorruption(str, Enum):
    """Common corruptions (distinct from the memorization study's randomization tests, data.Randomization)."""

    GAUSSIAN_NOISE = "gaussian_noise"
    SHOT_NOISE = "shot_noise"
    IMPULSE_NOISE = "impulse_noise"
    DEFOCUS_BLUR = "defocus_blur"
    GLASS_BLUR = "glass_blur"
    MOTION_BLUR = "motion_blur"
    ZOOM_BLUR = "zoom_blur"
    SNOW = "snow"
    FROST = "frost"
    FOG = "fog"
    BRIGHTNESS = "brightness"
    CONTRAST = "contrast"
    ELASTIC_TRANSFORM = "elastic_transform"
    PIXELATE = "pixelate"
    JPEG_COMPRESSION = "jpeg_compression"
    SHEAR = "shear"
    SCALE = "scale"
    ROTATE = "rotate"
    TRANSLATE = "translate"
    STRIPE = "stripe"
    SPATTER = "spatter"
    DOTTED_LINE = "dotted_line"
    ZIGZAG = "zigzag"
    CANNY_EDGES = "canny_edges"


C = CommonCorruption
MNIST_C = [C.SHOT_NOISE, C.IMPULSE_NOISE, C.GLASS_BLUR, C.MOTION_BLUR, C.SHEAR, C.SCALE, C.ROTATE, C.BRIGHTNESS,
           C.TRANSLATE, C.STRIPE, C.FOG, C.SPATTER, C.DOTTED_LINE, C.ZIGZAG, C.CANNY_EDGES]
CIFAR10_C = [C.GAUSSIAN_NOISE, C.SHOT_NOISE, C.IMPULSE_NOISE, C.DEFOCUS_BLUR, C.GLASS_BLUR, C.MOTION_BLUR,
             C.ZOOM_BLUR, C.SNOW, C.FROST, C.FOG, C.BRIGHTNESS, C.CONTRAST, C.ELASTIC_TRANSFORM, C.PIXELATE,
             C.JPEG_COMPRESSION]
# the severity each MNIST-C corruption was published at (its code's default), and ours for the four without one
MNIST_C_LEVEL = {C.SHOT_NOISE: 5, C.IMPULSE_NOISE: 4, C.GLASS_BLUR: 1, C.MOTION_BLUR: 1, C.SHEAR: 2, C.SCALE: 3,
                 C.ROTATE: 2, C.BRIGHTNESS: 5, C.TRANSLATE: 3, C.STRIPE: 3, C.FOG: 5, C.SPATTER: 4, C.DOTTED_LINE: 1,
                 C.ZIGZAG: 1, C.CANNY_EDGES: 5}
# more severe -> farther from the clean image (mean L2 over images): true where one published knob moves one way;
# the others move several knobs at once (their severities were set by accuracy, not pixel distance): glass blur
# (iterations and delta alternate), snow, frost, fog (strength up, roughness down), elastic (affine jitter falls
# as the field grows), pixelate (whole-pixel rounding of the down-sampled size), spatter (two regimes)
FARTHER_WITH_SEVERITY = {C.GAUSSIAN_NOISE, C.SHOT_NOISE, C.IMPULSE_NOISE, C.DEFOCUS_BLUR, C.MOTION_BLUR, C.ZOOM_BLUR,
                         C.BRIGHTNESS, C.CONTRAST, C.JPEG_COMPRESSION, C.SHEAR, C.SCALE, C.ROTATE, C.TRANSLATE,
                         C.STRIPE, C.DOTTED_LINE, C.ZIGZAG, C.CANNY_EDGES}
SUBSTITUTES = {C.FROST: "procedural ice texture instead of the published frost photographs",
               C.STRIPE: "severity scale ours (published: severity 3)", C.DOTTED_LINE: "severity = strokes (ours)",
               C.ZIGZAG: "severity = strokes (ours)", C.CANNY_EDGES: "severity = blend weight (ours)",
               C.GLASS_BLUR: "batch-wise gather instead of sequential swaps"}


def _zooms(stop: float, step: float) -> list[float]:
    return [float(z) for z in np.arange(1, stop, step)]


# (greyscale: MNIST-C, colour: CIFAR-10-C); sizes marked 'frac' are fractions of the image side
PARAMS: dict[CommonCorruption, dict[str, list[Any]]] = {
    C.GAUSSIAN_NOISE: {"grey": [0.08, 0.12, 0.18, 0.26, 0.38], "colour": [0.04, 0.06, 0.08, 0.09, 0.10]},
    C.SHOT_NOISE: {"grey": [60, 25, 12, 5, 3], "colour": [500, 250, 100, 75, 50]},
    C.IMPULSE_NOISE: {"grey": [0.03, 0.06, 0.09, 0.17, 0.27], "colour": [0.01, 0.02, 0.03, 0.05, 0.07]},
    C.DEFOCUS_BLUR: {"grey": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
                     "colour": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)]},
    C.GLASS_BLUR: {"grey": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],  # sigma, delta, iters
                   "colour": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)]},
    C.MOTION_BLUR: {"grey": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],  # radius, sigma
                    "colour": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)]},
    C.ZOOM_BLUR: {"grey": [_zooms(1.11, .01), _zooms(1.16, .01), _zooms(1.21, .02), _zooms(1.26, .02), _zooms(1.31, .03)],
                  "colour": [_zooms(1.06, .01), _zooms(1.11, .01), _zooms(1.16, .01), _zooms(1.21, .01),
                             _zooms(1.26, .01)]},
    C.SNOW: {"grey": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                      (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
             "colour": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)]},
    C.FROST: {"grey": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
              "colour": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)]},
    C.FOG: {"grey": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],  # strength, decay
            "colour": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)]},
    C.BRIGHTNESS: {"grey": [0.1, 0.2, 0.3, 0.4, 0.5], "colour": [0.05, 0.1, 0.15, 0.2, 0.3]},
    C.CONTRAST: {"grey": [0.4, 0.3, 0.2, 0.1, 0.05], "colour": [0.75, 0.5, 0.4, 0.3, 0.15]},
    C.ELASTIC_TRANSFORM: {  # alpha, sigma, affine jitter: fractions of the image side
        "grey": [(2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02)],
        "colour": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)]},
    C.PIXELATE: {"grey": [0.6, 0.5, 0.4, 0.3, 0.25], "colour": [0.95, 0.9, 0.85, 0.75, 0.65]},
    C.JPEG_COMPRESSION: {"grey": [25, 18, 15, 10, 7], "colour": [80, 65, 58, 50, 40]},
    C.SHEAR: {"grey": [0.2, 0.4, 0.6, 0.8, 1.0]},  # radians, random sign
    C.SCALE: {"grey": [0.9, 0.8, 0.7, 0.6, 0.5]},  # zoom factor of the content
    C.ROTATE: {"grey": [0.2, 0.4, 0.6, 0.8, 1.0]},  # radians, random sign
    C.TRANSLATE: {"grey": [1, 2, 3, 4, 5]},  # pixels in x and in y, random signs
    C.STRIPE: {"grey": [0.1, 0.175, 0.25, 0.325, 0.4]},  # inverted band at each side, fraction of the width
    C.SPATTER: {"grey": [(0.65, 0.3, 4, 0.69, 0.6), (0.65, 0.3, 3, 0.68, 0.6), (0.65, 0.3, 2, 0.68, 0.5),
                         (0.65, 0.3, 1, 0.65, 1.5), (0.67, 0.4, 1, 0.65, 1.5)]},
    C.DOTTED_LINE: {"grey": [1, 2, 3, 4, 5]},
    C.ZIGZAG: {"grey": [1, 2, 3, 4, 5]},
    C.CANNY_EDGES: {"grey": [0.2, 0.4, 0.6, 0.8, 1.0]},
}


def as_corruption(name: str | CommonCorruption) -> CommonCorruption:
    if isinstance(name, CommonCorruption):
        return name
    return CommonCorruption(check_choice("corruption", str(name), [c.value for c in CommonCorruption]))


def corruption_set(channels: int) -> list[CommonCorruption]:
    """MNIST-C's fifteen for greyscale images, CIFAR-10-C's fifteen for colour images."""
    return list(MNIST_C if channels == 1 else CIFAR10_C)


def parameters(corruption: str | CommonCorruption, severity: int, channels: int) -> Any:
    c = as_corruption(corruption)
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise UsageError(f"severity must be a whole number in 1..5, got {severity!r}")
    table = PARAMS[c]
    return (table.get("grey") if channels == 1 else table.get("colour")) or next(iter(table.values()))


MIN_SIZE = 6  # the smallest images every corruption draws on (zigzag's lines need 6 pixels; tested)


def corrupt(x: torch.Tensor, corruption: str | CommonCorruption, severity: int, seed: int = 0) -> torch.Tensor:
    """Corrupt a batch (B, C, H, W) in [0,1] at severity 1..5; deterministic given (x, corruption, severity, seed)."""
    c = as_corruption(corruption)
    table = parameters(c, severity, x.shape[1] if x.dim() == 4 else 1)
    check_images(x, c.value, min_size=MIN_SIZE)
    gen = generator(seed, c.value)
    return CORRUPTIONS[c](x, table[severity - 1], table, gen).clamp_(0, 1)


# ------------------------------------------------------------------ noise
def _gaussian_noise(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    return x + p * torch.randn(x.shape, generator=gen).to(x.device)


def _shot_noise(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    return torch.poisson((x * p).cpu(), generator=gen).to(x.device) / p


def _impulse_noise(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    u, salt = (torch.rand(x.shape, generator=gen).to(x.device) for _ in range(2))
    return torch.where(u < p, (salt < 0.5).to(x.dtype), x)  # scikit-image's s&p: half salt, half pepper


# ------------------------------------------------------------------ blur
def _defocus_blur(x: torch.Tensor, p: tuple, _t: list, gen: torch.Generator) -> torch.Tensor:
    return filter2d(x, ops.disk_kernel(*p).to(x.device))


def _glass_blur(x: torch.Tensor, p: tuple, _t: list, gen: torch.Generator) -> torch.Tensor:
    sigma, delta, iterations = p
    shuffled = ops.local_shuffle(gaussian_blur(x, sigma), delta, iterations, gen, skip=0.5 if x.shape[1] == 1 else 0)
    return gaussian_blur(shuffled, sigma)


def _angles(b: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(b, generator=gen) * (high - low) + low


def _motion_blur(x: torch.Tensor, p: tuple, _t: list, gen: torch.Generator) -> torch.Tensor:
    return ops.motion_blur(x, p[0], p[1], _angles(len(x), -45, 45, gen))


def _zoom_blur(x: torch.Tensor, p: list, _t: list, gen: torch.Generator) -> torch.Tensor:
    out = x.clone()
    for z in p:  # the average of the image and its centred zooms
        out += warp(x, affine_matrix(len(x), zoom=z, device=x.device), padding="border")
    return out / (len(p) + 1)


# ------------------------------------------------------------------ weather
def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device)[None, :, None, None]
    return (x * w).sum(1, keepdim=True)


def _snow(x: torch.Tensor, p: tuple, _t: list, gen: torch.Generator) -> torch.Tensor:
    loc, scale, zoom, threshold, radius, sigma, keep = p
    b, _, h, w = x.shape
    layer = (torch.randn((b, 1, h, w), generator=gen) * scale + loc).to(x.device)
    layer = warp(layer, affine_matrix(b, zoom=zoom, device=x.device), padding="border")
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = ops.motion_blur(layer, radius, sigma, _angles(b, -135, -45, gen))
    x = keep * x + (1 - keep) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


def _texture(x: torch.Tensor, decay: float, mapsize: int, gen: torch.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    size = max(mapsize, 1 << (max(h, w) - 1).bit_length())
    return ops.plasma_fractal(b, size, decay, gen)[:, None, :h, :w].to(x.device)


def _fog(x: torch.Tensor, p: tuple, _t: list, gen: torch.Generator) -> torch.Tensor:
    strength, decay = p
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    mapsize = 256 if x.shape[1] == 1 else 32  # MNIST-C crops 28x28 out of a 256 map; CIFAR-10-C uses 32
    return (x + strength * _texture(x, decay, mapsize, gen)) * top / (top + strength)


def _frost(x: torch.Tensor, p: tuple, _t: list, gen: torch.Generator) -> torch.Tensor:
    ice = _texture(x, 1.2, 64, gen) ** 1.5  # substitute for the frost photographs: a rough, mostly dark texture
    return p[0] * x + p[1] * ice


def _spatter(x: torch.Tensor, p: tuple, _t: list, gen: torch.Generator) -> torch.Tensor:
    loc, scale, sigma, threshold, mud_sigma = p
    b, _, h, w = x.shape
    liquid = gaussian_blur((torch.randn((b, 1, h, w), generator=gen) * scale + loc).to(x.device), sigma)
    mask = gaussian_blur((liquid > threshold).float(), mud_sigma)
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask)
    mud = torch.tensor([63, 42, 20] if x.shape[1] == 3 else [63] * x.shape[1], device=x.device) / 255
    return x * (1 - mask) + mud[None, :, None, None] * mask


# ------------------------------------------------------------------ digital
def _brightness(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    if x.shape[1] == 1:
        return x + p
    value = x.amax(1, keepdim=True)  # HSV value; raising it scales the pixel, hue and saturation unchanged
    raised = (value + p).clamp(max=1)
    return torch.where(value > 0, x * raised / value.clamp_min(1e-12), raised.expand_as(x))


def _contrast(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * p + mean


def _elastic(x: torch.Tensor, p: tuple, _t: list, gen: torch.Generator) -> torch.Tensor:
    """Hendrycks' elastic transform: a random affine map (3 points jittered), then a smoothed random field."""
    b, _, h, w = x.shape
    side = min(h, w)
    alpha, sigma, jitter = (v * side for v in p)
    centre, half = torch.tensor([(w - 1) / 2, (h - 1) / 2]), side // 3
    src = torch.stack([centre + half, centre + torch.tensor([half, -half]), centre - half]).expand(b, 3, 2)
    dst = src + (torch.rand((b, 3, 2), generator=gen) * 2 - 1) * jitter
    ones = torch.ones(b, 3, 1)
    forward = torch.linalg.solve(torch.cat([src, ones], 2), torch.cat([dst, ones], 2)).transpose(1, 2)  # (B, 3, 3)
    inverse = torch.linalg.inv(forward)[:, :2]  # source-from-output in absolute pixels; centre it:
    matrix = torch.cat([inverse[:, :, :2], (inverse[:, :, :2] @ centre + inverse[:, :, 2] - centre)[..., None]], 2)
    padding = "reflection" if x.shape[1] == 3 else "zeros"
    x = warp(x, matrix.to(x.device), padding=padding)
    field = torch.rand((b, 2, h, w), generator=gen).to(x.device) * 2 - 1
    if alpha == 0:
        return x
    field = gaussian_blur(field, sigma, truncate=3.0) * alpha if sigma > 0 else field * alpha
    return warp(x, torch.eye(2, 3, device=x.device).expand(b, 2, 3), offset=field, padding=padding)


def _pixelate(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * p)), max(1, int(w * p))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def _jpeg(x: torch.Tensor, p: int, _t: list, gen: torch.Generator) -> torch.Tensor:
    return ops.jpeg(x, int(p))


def _signs(b: int, gen: torch.Generator, n: int = 1) -> torch.Tensor:
    return torch.randint(0, 2, (n, b), generator=gen).float() * 2 - 1


def _shear(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    return warp(x, affine_matrix(len(x), shear=p * _signs(len(x), gen)[0], device=x.device))


def _rotate(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    angle = float(np.degrees(p)) * _signs(len(x), gen)[0]
    return warp(x, affine_matrix(len(x), angle=angle, device=x.device))


def _scale(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    return warp(x, affine_matrix(len(x), zoom=p, device=x.device))


def _translate(x: torch.Tensor, p: int, _t: list, gen: torch.Generator) -> torch.Tensor:
    d = (_signs(len(x), gen, 2) * p).long().to(x.device)
    return translate(x, d[0], d[1])


def _stripe(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    band = max(1, round(p * x.shape[-1]))
    out = x.clone()
    out[..., :band], out[..., -band:] = 1 - x[..., :band], 1 - x[..., -band:]
    return out


def _dotted_line(x: torch.Tensor, p: int, _t: list, gen: torch.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    rows = torch.randint(0, h - 1, (2, b, 5), generator=gen)[:, :, :p].flatten(1)  # 5 drawn, severity s draws s
    n = b * p
    ink = ops.strokes(h, w, torch.zeros(n), rows[0], torch.full((n,), w - 1.0), rows[1]).view(b, p, h, w)
    ink = ink * ((torch.arange(w) // 2) % 2 == 1)  # dots: 2-pixel column blocks, every other one empty
    return x + ink.sum(1, keepdim=True).to(x.device)


def _zigzag(x: torch.Tensor, p: int, _t: list, gen: torch.Generator) -> torch.Tensor:
    """Triangle waves (amplitude 2 px, period 8 px at 28x28) along random lines from column 2 to column w-3."""
    b, _, h, w = x.shape
    r0 = torch.randint(0, h - 1, (b, 5), generator=gen)[:, :p].flatten().float()
    r1 = r0 + torch.randint(-5, 5, (b, 5), generator=gen)[:, :p].flatten().float() * h / 28
    c0, c1 = 2.0, w - 3.0
    theta = torch.atan((r1 - r0) / (c1 - c0))
    length = (c1 - c0) / torch.cos(theta)
    a, amp = 2.0 * w / 28, 2.0 * h / 28
    peaks = int(math.ceil((float(length.max()) / a - 1) / 2)) + 1
    u = torch.cat([torch.zeros(1), a * (2 * torch.arange(peaks) + 1)])[None, :]  # vertices along the line
    u = torch.minimum(u, length[:, None])
    rem = torch.remainder((u - a) / (2 * a), 2)  # triangle wave through (0, 0), (a, amp), (3a, -amp), (5a, amp)...
    v = torch.where(u < a, amp * u / a, amp * (1 - 2 * torch.minimum(rem, 2 - rem)))
    cols = c0 + u * torch.cos(theta)[:, None] - v * torch.sin(theta)[:, None]
    rows = r0[:, None] + u * torch.sin(theta)[:, None] + v * torch.cos(theta)[:, None]
    ink = ops.strokes(h, w, cols[:, :-1].flatten(), rows[:, :-1].flatten(), cols[:, 1:].flatten(),
                      rows[:, 1:].flatten()).view(b, p * peaks, h, w)
    return x + ink.sum(1, keepdim=True).to(x.device)


def _canny_edges(x: torch.Tensor, p: float, _t: list, gen: torch.Generator) -> torch.Tensor:
    return (1 - p) * x + p * ops.canny(x)


CORRUPTIONS = {
    C.GAUSSIAN_NOISE: _gaussian_noise, C.SHOT_NOISE: _shot_noise, C.IMPULSE_NOISE: _impulse_noise,
    C.DEFOCUS_BLUR: _defocus_blur, C.GLASS_BLUR: _glass_blur, C.MOTION_BLUR: _motion_blur, C.ZOOM_BLUR: _zoom_blur,
    C.SNOW: _snow, C.FROST: _frost, C.FOG: _fog, C.BRIGHTNESS: _brightness, C.CONTRAST: _contrast,
    C.ELASTIC_TRANSFORM: _elastic, C.PIXELATE: _pixelate, C.JPEG_COMPRESSION: _jpeg, C.SHEAR: _shear,
    C.SCALE: _scale, C.ROTATE: _rotate, C.TRANSLATE: _translate, C.STRIPE: _stripe, C.SPATTER: _spatter,
    C.DOTTED_LINE: _dotted_line, C.ZIGZAG: _zigzag, C.CANNY_EDGES: _canny_edges,
}
