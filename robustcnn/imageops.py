"""Batch image operations the common corruptions are built from, written on torch tensors (B, C, H, W) in [0,1]:
plasma fractals (fog, frost), motion blur, disk (defocus) kernels, local pixel shuffling (glass blur), Canny
edges, anti-aliased line strokes (MNIST-C's dotted line and zigzag) and JPEG round trips.

Each follows the operation the published CIFAR-10-C / MNIST-C code calls (scikit-image, OpenCV, ImageMagick,
PIL); where a step cannot be done batch-wise on tensors, the docstring says what is done instead.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustcnn.transforms import filter2d, gaussian_blur, translate


def plasma_fractal(b: int, mapsize: int, decay: float, gen: torch.Generator, *, chunk: int = 128) -> torch.Tensor:
    """(b, mapsize, mapsize) diamond-square height maps in [0,1] on a torus (Fournier et al. 1982), the noise
    amplitude falling by decay**2 per level from 100**2 as in Hendrycks & Dietterich's fog. mapsize: a power of 2."""
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    return torch.cat([_plasma(min(chunk, b - i), mapsize, decay, gen) for i in range(0, b, chunk)])


def _plasma(b: int, n: int, decay: float, gen: torch.Generator) -> torch.Tensor:
    grid = torch.zeros(b, 1, 1)  # (b, k, k): the values on the coarsest lattice so far, k = n / step
    wibble = 100.0

    def jitter(mean: torch.Tensor) -> torch.Tensor:
        return mean / 4 + wibble * (torch.rand(mean.shape, generator=gen) * 2 - 1) * wibble

    while grid.shape[1] < n:
        square = grid + grid.roll(-1, 1)
        centres = jitter(square + square.roll(-1, 2))  # square step: the centre of 4 lattice points
        tops = jitter(centres + centres.roll(1, 1) + grid + grid.roll(-1, 2))  # diamond step: edge midpoints
        lefts = jitter(centres + centres.roll(1, 2) + grid + grid.roll(-1, 1))
        k = grid.shape[1]  # interleave into the lattice of half the step: [[grid, top], [left, centre]]
        grid = torch.stack([torch.stack([grid, tops], -1), torch.stack([lefts, centres], -1)], 2).reshape(b, 2 * k, 2 * k)
        wibble /= decay
    low = grid.amin(dim=(1, 2), keepdim=True)
    return (grid - low) / (grid.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-12)


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle: torch.Tensor) -> torch.Tensor:
    """ImageMagick's -motion-blur radius x sigma at `angle` degrees (one per image): a one-sided trail of
    2*ceil(radius)+1 taps at whole-pixel offsets along the angle, Gaussian weights exp(-i^2 / 2 sigma^2),
    edge pixels repeated."""
    taps = int(2 * math.ceil(radius) + 1)
    weights = torch.exp(-torch.arange(taps, dtype=torch.float32) ** 2 / (2 * sigma * sigma))
    weights = weights / weights.sum()
    rad = torch.deg2rad(angle.float().to(x.device))
    out = torch.zeros_like(x)
    for i in range(taps):
        dx, dy = torch.round(i * torch.cos(rad)).long(), torch.round(i * torch.sin(rad)).long()
        out += weights[i].item() * translate(x, -dx, -dy, edge=True)  # the pixel i steps along the trail
    return out


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """Hendrycks & Dietterich's defocus kernel: a normalized disk on a 17x17 grid (a wider one above radius 8),
    smoothed by a 3x3 (5x5) Gaussian of std alias_blur, trimmed to its non-zero support."""
    half = 8 if radius <= 8 else int(math.ceil(radius))
    t = torch.arange(-half, half + 1, dtype=torch.float32)
    disk = ((t[None, :] ** 2 + t[:, None] ** 2) <= radius ** 2).float()
    disk = disk / disk.sum()
    ks = 3 if radius <= 8 else 5
    g = torch.exp(-0.5 * (torch.arange(ks, dtype=torch.float32) - ks // 2) ** 2 / alias_blur ** 2)
    g = g / g.sum()
    k = F.conv2d(disk[None, None], (g[:, None] * g[None, :])[None, None], padding=ks // 2)[0, 0]
    rows, cols = k.abs().sum(1) > 1e-12, k.abs().sum(0) > 1e-12
    return k[rows][:, cols]


def local_shuffle(x: torch.Tensor, max_delta: int, iterations: int, gen: torch.Generator, *,
                  skip: float = 0.0) -> torch.Tensor:
    """Glass blur's pixel shuffling, batch-wise: each pixel takes the value of a neighbour at an offset drawn from
    [-max_delta, max_delta - 1]^2 as published, times a random sign (clamped at the border); with probability
    `skip` it keeps its own. The published code swaps pixel pairs one after another in a Python loop, and a swap
    moves its two pixels in opposite directions; the sign makes the batch-wise gather unbiased in the same way
    (without it every pixel would drift up and left)."""
    b, c, h, w = x.shape
    rows = torch.arange(h)[None, :, None].expand(b, h, w)
    cols = torch.arange(w)[None, None, :].expand(b, h, w)
    for _ in range(iterations):
        d = torch.randint(-max_delta, max_delta, (2, b, h, w), generator=gen)
        d = d * (torch.randint(0, 2, (1, b, h, w), generator=gen) * 2 - 1)
        if skip > 0:
            d = d * (torch.rand((1, b, h, w), generator=gen) >= skip)
        src = ((rows + d[1]).clamp(0, h - 1) * w + (cols + d[0]).clamp(0, w - 1)).to(x.device)
        x = x.flatten(2).gather(2, src.flatten(1)[:, None, :].expand(b, c, h * w)).view(b, c, h, w)
    return x


def canny(x: torch.Tensor, sigma: float = 1.0, low: float = 0.1, high: float = 0.2) -> torch.Tensor:
    """Canny edges (scikit-image's defaults): Gaussian smoothing, Sobel gradients, non-maximum suppression in 4
    directions, hysteresis (weak edges kept where 8-connected to strong ones); one edge map per channel, 0/1,
    the one-pixel border left empty."""
    s = gaussian_blur(x, sigma)
    sob = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    gx, gy = filter2d(s, sob), filter2d(s, sob.T)
    mag = torch.hypot(gx, gy)
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180
    direction = torch.round(angle / 45).long() % 4  # 0: along x, 1: down-right, 2: along y, 3: down-left
    pad = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[-2:]

    def at(dy: int, dx: int) -> torch.Tensor:
        return pad[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    pairs = [((0, 1), (0, -1)), ((1, 1), (-1, -1)), ((1, 0), (-1, 0)), ((1, -1), (-1, 1))]
    keep = torch.zeros_like(mag, dtype=torch.bool)
    for k, (a, b) in enumerate(pairs):
        keep |= (direction == k) & (mag >= at(*a)) & (mag >= at(*b))
    keep &= mag > 0
    border = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    border[1:-1, 1:-1] = True
    weak = keep & (mag >= low) & border
    edges = weak & (mag >= high)
    while True:  # hysteresis: grow the strong edges through connected weak ones until nothing changes
        grown = weak & (F.max_pool2d(edges.float(), 3, stride=1, padding=1) > 0)
        if torch.equal(grown, edges):
            return edges.float()
        edges = grown


def strokes(h: int, w: int, c0: torch.Tensor, r0: torch.Tensor, c1: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    """(n, h, w) anti-aliased strokes from (c0, r0) to (c1, r1) (column, row), as MNIST-C draws them: intensity
    log(1 - d/2.3) + 1 at vertical distance d from the line, zero outside the segment's columns and for vertical
    segments."""
    rr = torch.arange(h, dtype=torch.float32)[None, :, None]
    cc = torch.arange(w, dtype=torch.float32)[None, None, :]
    c0, r0, c1, r1 = (v.float()[:, None, None] for v in (c0, r0, c1, r1))
    run = c1 - c0
    slope = (r1 - r0) / torch.where(run == 0, torch.ones_like(run), run)
    dist = (rr - (slope * (cc - c0) + r0)).abs().clamp(0, 2.3 - 1e-6)
    ink = (torch.log(1 - dist / 2.3) + 1).clamp(0, 1)
    inside = (cc >= torch.floor(torch.minimum(c0, c1))) & (cc < torch.ceil(torch.maximum(c0, c1)))
    return ink * inside * (run != 0)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A real JPEG encode/decode round trip with PIL (libjpeg), as the published code does, on 8-bit pixels."""
    import io

    import numpy as np
    from PIL import Image

    pixels = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
    mode = "L" if pixels.shape[-1] == 1 else "RGB"
    out = []
    for img in pixels:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if mode == "L" else img, mode=mode).save(buf, "JPEG", quality=int(quality))
        out.append(np.asarray(Image.open(buf)).reshape(img.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device).float().div_(255)
