"""The anatomy and the findings `synthetic.generate` draws a phantom radiograph from: analytic shapes (lungs, heart,
ribs, diaphragm) on a normalised pixel grid, sampled from a seed, and the opacities of each finding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

#: The findings :func:`synthetic.generate` can draw, in canonical order (``Phantom.findings`` follows this order).
FINDINGS = ("pneumonia", "covid", "nodule", "effusion", "cardiomegaly")
MIN_SIZE = 32


# ----------------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------------


def random_stream(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *stream]))


def parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels per side, got {(h, w)}")
    return h, w


def normalise_findings(findings: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(findings, str):
        findings = (findings,)
    unknown = sorted(set(findings) - set(FINDINGS))
    if unknown:
        raise ValueError(f"unknown finding(s) {unknown}; known: {FINDINGS}")
    return tuple(f for f in FINDINGS if f in set(findings))


def ramp(s: np.ndarray, eps: float) -> np.ndarray:
    """Soft indicator of ``s > 0``: 0 below ``-eps/2``, 1 above ``eps/2``, linear between (0.5 at ``s == 0``)."""
    return np.clip(s * (1.0 / eps) + 0.5, 0.0, 1.0)


def smooth_noise(rng: np.random.Generator, cells: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Smooth random field (roughly zero mean, unit std) of ``shape`` from a ``cells`` grid, bicubically upsampled.

    The number of random draws depends on ``cells`` only, so the field is resolution independent.
    """
    small = rng.standard_normal(cells).astype(np.float32)
    h, w = shape
    if h <= 0 or w <= 0:
        return np.zeros((max(h, 0), max(w, 0)), np.float32)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)
    return big * np.float32(1.35)


class Grid:
    """Normalised pixel-centre coordinates: ``x`` is ``(1, W)``, ``y`` is ``(H, 1)``, both float32 in (0, 1)."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
        self.y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
        self.px = 1.0 / min(h, w)  # one pixel, in normalised units (of the shorter side)

    def box(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Slices of the pixels whose centres may fall in ``[x0, x1] x [y0, y1]`` (clipped to the image)."""
        c0 = min(max(int(np.floor(x0 * self.w)), 0), self.w)
        c1 = min(max(int(np.ceil(x1 * self.w)) + 1, c0), self.w)
        r0 = min(max(int(np.floor(y0 * self.h)), 0), self.h)
        r1 = min(max(int(np.ceil(y1 * self.h)) + 1, r0), self.h)
        return slice(r0, r1), slice(c0, c1)


# ----------------------------------------------------------------------------------------------------------------
# anatomy parameters (all in normalised units; depend on the seed only)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Lung:
    side: int  # +1: patient's left lung (image right); -1: patient's right lung (image left)
    cx: float  # body midline
    t: float  # apex (top) y
    b: float  # lowest point (costophrenic angle) y
    u_apex: float  # lateral distance of the apex from the midline
    u_med: float  # mediastinal border (lateral distance from the midline)
    u_lat: float  # widest lateral extent
    vm: float  # fraction of the height where the lateral border is widest
    vm2: float  # fraction of the height where the medial border reaches the mediastinum
    dome_h: float  # diaphragm dome height above the costophrenic angle
    dome_c: float  # dome peak (lateral distance)
    dome_w: float  # dome width

    def x_range(self) -> tuple[float, float]:
        a, b = self.cx + self.side * (self.u_med - 0.02), self.cx + self.side * (self.u_lat + 0.02)
        return min(a, b), max(a, b)

    def edges(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Medial and lateral borders (lateral distance from the midline) for rows ``y`` (any shape)."""
        v = (y - self.t) / (self.b - self.t)
        p = np.clip(v / self.vm, 0.0, 1.0)
        lat = self.u_apex + (self.u_lat - self.u_apex) * np.sqrt(1.0 - (1.0 - p) ** 2)
        lat = lat - 0.25 * (self.u_lat - self.u_apex) * np.clip(v - self.vm, 0.0, None) ** 2
        q = np.clip(v / self.vm2, 0.0, 1.0)
        med = self.u_apex - (self.u_apex - self.u_med) * np.sqrt(1.0 - (1.0 - q) ** 2)
        return med.astype(np.float32), lat.astype(np.float32)

    def dome(self, u: np.ndarray) -> np.ndarray:
        return self.b - self.dome_h * np.exp(-(((u - self.dome_c) / self.dome_w) ** 2))

    def signed(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(s, u, w)`` on the broadcast grid of ``x`` (1, w) and ``y`` (h, 1).

        ``s`` is a signed, roughly metric inside-ness of the lung field (heart not removed), ``u`` the lateral
        distance from the midline and ``w`` the relative position between the medial (0) and lateral (1) border.
        """
        u = (x - self.cx) * self.side
        med, lat = self.edges(y)
        s = np.minimum(np.minimum(u - med, lat - u), np.minimum(self.dome(u) - y, y - self.t))
        w = (u - med) / np.maximum(lat - med, 1e-3)
        return s, u, w


@dataclass
class Heart:
    cx: float
    cy: float
    a: float  # semi-axis along the long axis
    c: float  # semi-axis across
    cos: float
    sin: float

    def half_width(self) -> float:
        return float(np.sqrt((self.a * self.cos) ** 2 + (self.c * self.sin) ** 2))

    def bounds(self) -> tuple[float, float, float, float]:
        hw = self.half_width()
        hh = float(np.sqrt((self.a * self.sin) ** 2 + (self.c * self.cos) ** 2))
        return self.cx - hw, self.cx + hw, self.cy - hh, self.cy + hh

    def signed(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(s, q2)``: signed inside-ness (positive inside) and the squared elliptic radius."""
        dx, dy = x - self.cx, y - self.cy
        xr = (dx * self.cos + dy * self.sin) / self.a
        yr = (-dx * self.sin + dy * self.cos) / self.c
        q2 = xr * xr + yr * yr
        return (1.0 - np.sqrt(q2)) * min(self.a, self.c), q2


def make_heart(cx: float, thorax_w: float, y_base: float, ctr: float, tilt: float, aspect: float) -> Heart:
    """A tilted ellipse of horizontal extent ``ctr * thorax_w`` whose widest part sits just above ``y_base``."""
    width = ctr * thorax_w  # horizontal extent of the cardiac silhouette
    cos, sin = float(np.cos(tilt)), float(np.sin(tilt))
    # half width = sqrt((a cos)^2 + (c sin)^2) with c = aspect * a
    a = 0.5 * width / np.sqrt(cos**2 + (aspect * sin) ** 2)
    c = aspect * a
    hx = cx + 0.19 * width  # about 1/3 of the heart right of the midline (image left), 2/3 left of it
    hy = y_base - 0.3 * c
    return Heart(hx, hy, float(a), float(c), cos, sin)


@dataclass
class Anatomy:
    cx: float
    lungs: tuple[Lung, Lung]  # (patient's right = image left, patient's left = image right)
    heart: Heart
    heart_base: float
    ctr: float
    heart_tilt: float
    heart_aspect: float
    body_ax: float
    body_ay: float
    body_cy: float
    body_p: float
    clav_y: float
    clav_slope: float
    rib_y1: float
    rib_s0: float
    rib_growth: float
    rib_a: float
    rib_b: float
    rib_n: int
    hilum_y: float
    vessels: tuple  # per lung: ((m, c, phase), ...) of the random polar field whose zero set draws the vessels
    rib_jitter: np.ndarray  # (n, 2): per-rib offset and half-width change (in periods)
    aorta: tuple[float, float, float, float]
    bubble: tuple[float, float, float, float]
    contrast: float
    gamma: float
    lung_air: float
    vessel_seed: int
    tissue_seed: int


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    u = rng.uniform
    cx = 0.5 + u(-0.02, 0.02)
    t = u(0.10, 0.15)
    b_r = u(0.70, 0.78)
    b_l = b_r + u(0.01, 0.04)  # left hemidiaphragm lower
    lungs = []
    for side, b in ((-1, b_r), (+1, b_l)):
        u_med = u(0.065, 0.085)
        u_lat = u(0.34, 0.40)
        lungs.append(
            Lung(
                side=side,
                cx=cx,
                t=t + u(-0.01, 0.01),
                b=b,
                u_apex=u(0.12, 0.16),
                u_med=u_med,
                u_lat=u_lat,
                vm=u(0.72, 0.9),
                vm2=u(0.18, 0.35),
                dome_h=u(0.07, 0.11),
                dome_c=u_med + (u_lat - u_med) * u(0.35, 0.5),
                dome_w=u(0.12, 0.18),
            )
        )
    thorax_w = lungs[0].u_lat + lungs[1].u_lat
    ctr = u(0.40, 0.47)
    tilt = u(0.35, 0.6)
    aspect = u(0.62, 0.75)
    heart_base = lungs[1].b - lungs[1].dome_h + u(0.0, 0.02)  # on the left hemidiaphragm
    heart = make_heart(cx, thorax_w, heart_base, ctr, tilt, aspect)
    return Anatomy(
        cx=cx,
        lungs=(lungs[0], lungs[1]),
        heart=heart,
        heart_base=heart_base,
        ctr=ctr,
        heart_tilt=tilt,
        heart_aspect=aspect,
        body_ax=u(0.44, 0.49),
        body_ay=u(0.7, 0.8),
        body_cy=u(0.6, 0.66),
        body_p=u(3.0, 4.0),
        clav_y=t + u(0.07, 0.1),
        clav_slope=u(0.15, 0.3),
        rib_y1=t - u(0.0, 0.03),
        rib_s0=u(0.045, 0.055),
        rib_growth=u(0.04, 0.09),
        rib_a=u(0.35, 0.6),
        rib_b=u(1.6, 2.2),
        rib_n=int(rng.integers(9, 11)),
        hilum_y=t + u(0.24, 0.30),
        vessels=tuple(
            tuple((u(4.0, 11.0), u(-3.0, 3.0), u(0.0, 2.0 * np.pi)) for _ in range(5)) for _side in range(2)
        ),
        rib_jitter=np.stack([rng.normal(0.0, 0.05, 16), rng.normal(0.0, 0.02, 16)], axis=1).astype(np.float32),
        aorta=(cx + u(0.055, 0.065), t + u(0.17, 0.22), u(0.028, 0.036), u(0.025, 0.035)),
        bubble=(cx + u(0.15, 0.24), b_l + u(0.03, 0.06), u(0.03, 0.05), u(0.02, 0.03)),
        contrast=u(1.1, 1.35),
        gamma=u(0.9, 1.15),
        lung_air=u(0.56, 0.64),
        vessel_seed=int(rng.integers(0, 2**31)),
        tissue_seed=int(rng.integers(0, 2**31)),
    )


# ----------------------------------------------------------------------------------------------------------------
# findings: opacity fields (0..1) that replace lung air, plus cardiomegaly (a wider heart)
# ----------------------------------------------------------------------------------------------------------------


def lung_box(g: Grid, lung: Lung, pad: float = 0.0) -> tuple[slice, slice]:
    x0, x1 = lung.x_range()
    return g.box(x0 - pad, x1 + pad, lung.t - 0.02 - pad, lung.b + 0.02 + pad)


def draw_pneumonia(rng, g: Grid, an: Anatomy, opacity: np.ndarray, eps: float) -> None:
    lung = an.lungs[int(rng.integers(0, 2))]
    zone = rng.choice(3, p=[0.6, 0.25, 0.15])  # lower, middle, upper zone
    vc = (0.78, 0.5, 0.25)[zone] + rng.uniform(-0.04, 0.04)  # a lower-lobe consolidation reaches the diaphragm
    yc = lung.t + vc * (lung.b - lung.t)
    med, lat = lung.edges(np.float32(yc))
    uc = float(med + (lat - med) * rng.uniform(0.4, 0.6))
    rx = float(lat - med) * rng.uniform(0.5, 0.7)
    ry = (lung.b - lung.t) * rng.uniform(0.2, 0.28)
    rs, cs = g.box(lung.cx + lung.side * uc - rx - 0.05, lung.cx + lung.side * uc + rx + 0.05, yc - ry - 0.05,
                   yc + ry + 0.05)
    x, y = g.x[:, cs], g.y[rs]
    s_lung, u, _ = lung.signed(x, y)
    q = np.sqrt(((u - uc) / rx) ** 2 + ((y - yc) / ry) ** 2)
    nz = smooth_noise(rng, (6, 6), s_lung.shape)
    s = np.minimum((1.0 - q) * min(rx, ry) + 0.012 * nz, s_lung + 0.004)
    tex = smooth_noise(rng, (12, 12), s_lung.shape)
    dens = rng.uniform(0.85, 0.95)
    op = ramp(s, 3 * eps) * (dens + 0.05 * tex)
    np.maximum(opacity[rs, cs], op, out=opacity[rs, cs])


def draw_covid(rng, g: Grid, an: Anatomy, opacity: np.ndarray, eps: float) -> None:
    for lung in an.lungs:
        rs, cs = lung_box(g, lung)
        x, y = g.x[:, cs], g.y[rs]
        s_lung, u, w = lung.signed(x, y)
        v = (y - lung.t) / (lung.b - lung.t)
        periph = np.clip((w - rng.uniform(0.45, 0.6)) * 3.5, 0.0, 1.0)  # outer third of the lung
        lower = np.clip((v - 0.25) * 2.5, 0.15, 1.0)  # lower zones predominantly
        patch = np.clip(smooth_noise(rng, (9, 7), s_lung.shape) * 0.9 + 0.35, 0.0, 1.0)
        op = ramp(s_lung, 2 * eps) * periph * lower * patch * rng.uniform(0.5, 0.6)
        np.maximum(opacity[rs, cs], op, out=opacity[rs, cs])


def draw_nodules(rng, g: Grid, an: Anatomy, opacity: np.ndarray, eps: float,
                  masks: tuple[np.ndarray, np.ndarray]) -> None:
    n = int(rng.choice([1, 1, 1, 2, 3]))
    for _ in range(n):
        k = int(rng.integers(0, 2))
        lung = an.lungs[k]
        r0 = rng.uniform(0.014, 0.032)
        for _attempt in range(20):  # stay inside the lung field (and out of the cardiac notch)
            yc = lung.t + rng.uniform(0.2, 0.8) * (lung.b - lung.t)
            med, lat = lung.edges(np.float32(yc))
            xc = lung.cx + lung.side * float(med + (lat - med) * rng.uniform(0.2, 0.8))
            r, c = min(int(yc * g.h), g.h - 1), min(int(xc * g.w), g.w - 1)
            if masks[k][r, c]:
                break
        rs, cs = g.box(xc - 2 * r0, xc + 2 * r0, yc - 2 * r0, yc + 2 * r0)
        x, y = g.x[:, cs], g.y[rs]
        d = np.sqrt((x - xc) ** 2 + (y - yc) ** 2)
        op = ramp(r0 - d, max(2 * eps, 0.3 * r0)) * rng.uniform(0.85, 1.0)
        np.maximum(opacity[rs, cs], op, out=opacity[rs, cs])


def draw_effusion(rng, g: Grid, an: Anatomy, opacity: np.ndarray, eps: float) -> None:
    lung = an.lungs[int(rng.integers(0, 2))]
    level = lung.b - rng.uniform(0.15, 0.32) * (lung.b - lung.t)  # fluid level at the medial side
    rise = rng.uniform(0.06, 0.11)  # meniscus: fluid climbs the lateral chest wall
    rs, cs = g.box(*lung.x_range(), level - rise - 0.02, lung.b + 0.04)
    x, y = g.x[:, cs], g.y[rs]
    u = (x - lung.cx) * lung.side
    med, lat = lung.edges(np.minimum(y, lung.b))
    w = np.clip((u - med) / np.maximum(lat - med, 1e-3), 0.0, 1.0)
    top = level - rise * w**2
    s = np.minimum(np.minimum(y - top, lat + 0.01 - u), u - med + 0.01)
    op = ramp(s, 3 * eps) * rng.uniform(0.9, 1.0)
    np.maximum(opacity[rs, cs], op, out=opacity[rs, cs])
