"""Deterministic phantom chest radiographs: the data every test and demo of SPCXR Hub uses.

``generate(seed, size, findings)`` draws a PA chest radiograph from a handful of analytic shapes on a pixel grid
(vectorised numpy, no per-pixel Python loops) and returns a :class:`Phantom` with the image and the exact lung
masks it was drawn from. Conventions:

* Radiograph convention: air (background, lungs) is dark, bone / heart / soft tissue are bright; values in [0, 1].
* Standard PA view: the patient's **left** is on the **image right**. ``left_mask`` is the patient's left lung
  (image right, the one with the cardiac notch), ``right_mask`` the patient's right lung (image left).
* Determinism: the same arguments give a bitwise-identical result. Anatomy, each finding, the pixel noise and the
  burned-in text draw from separate random streams derived from ``seed``, so adding a finding or turning text on
  or off changes only the pixels that finding (or the text) touches, and the anatomy (and the masks) depends on the
  seed only -- not on ``size``, ``findings``, ``text`` or ``noise``.
* Anatomy is described in normalised coordinates (x, y in [0, 1] across the width / height), so the same seed
  gives the same picture at any resolution; non-square sizes stretch it.

Only numpy and Pillow are needed; pydicom is imported lazily by :func:`write_dicom`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "FINDINGS",
    "LABELS",
    "Phantom",
    "generate",
    "sample_findings",
    "write_png8",
    "write_png16",
    "write_dicom",
    "write_mask_png",
]

#: The findings :func:`generate` can draw, in canonical order (``Phantom.findings`` follows this order).
FINDINGS = ("pneumonia", "covid", "nodule", "effusion", "cardiomegaly")
#: Class labels understood by :func:`sample_findings`.
LABELS = ("normal", "pneumonia", "covid", "abnormal")
_ABNORMAL = ("nodule", "effusion", "cardiomegaly")

# Random stream ids (second element of the seed sequence).
_STREAM_ANATOMY, _STREAM_FINDING, _STREAM_NOISE, _STREAM_TEXT = 0, 1, 2, 3
_MIN_SIZE = 32


@dataclass(frozen=True)
class Phantom:
    """A generated chest radiograph and its ground truth.

    Attributes:
        image: ``float32`` array of shape ``(H, W)`` with values in ``[0, 1]`` (air dark, bone/tissue bright).
        lung_mask: ``bool`` ``(H, W)``: the anatomical lung fields as drawn, exactly ``left_mask | right_mask``.
            Montgomery-style: the heart (the normal, seed-determined cardiac silhouette) and the mediastinum are
            excluded. Findings never change the masks: an enlarged heart (``"cardiomegaly"``), an effusion or a
            consolidation covers part of the mask, as in a real annotated radiograph.
        left_mask: ``bool`` ``(H, W)``: the patient's left lung (image right, standard PA view).
        right_mask: ``bool`` ``(H, W)``: the patient's right lung (image left).
        findings: the findings drawn, a sub-tuple of :data:`FINDINGS` in canonical order.
    """

    image: np.ndarray
    lung_mask: np.ndarray
    left_mask: np.ndarray
    right_mask: np.ndarray
    findings: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return self.image.shape  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------------


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *stream]))


def _parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h < _MIN_SIZE or w < _MIN_SIZE:
        raise ValueError(f"size must be at least {_MIN_SIZE} pixels per side, got {(h, w)}")
    return h, w


def _normalise_findings(findings: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(findings, str):
        findings = (findings,)
    unknown = sorted(set(findings) - set(FINDINGS))
    if unknown:
        raise ValueError(f"unknown finding(s) {unknown}; known: {FINDINGS}")
    return tuple(f for f in FINDINGS if f in set(findings))


def _ramp(s: np.ndarray, eps: float) -> np.ndarray:
    """Soft indicator of ``s > 0``: 0 below ``-eps/2``, 1 above ``eps/2``, linear between (0.5 at ``s == 0``)."""
    return np.clip(s * (1.0 / eps) + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, cells: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Smooth random field (roughly zero mean, unit std) of ``shape`` from a ``cells`` grid, bicubically upsampled.

    The number of random draws depends on ``cells`` only, so the field is resolution independent.
    """
    small = rng.standard_normal(cells).astype(np.float32)
    h, w = shape
    if h <= 0 or w <= 0:
        return np.zeros((max(h, 0), max(w, 0)), np.float32)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)
    return big * np.float32(1.35)


class _Grid:
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
class _Lung:
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
class _Heart:
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


def _make_heart(cx: float, thorax_w: float, y_base: float, ctr: float, tilt: float, aspect: float) -> _Heart:
    """A tilted ellipse of horizontal extent ``ctr * thorax_w`` whose widest part sits just above ``y_base``."""
    width = ctr * thorax_w  # horizontal extent of the cardiac silhouette
    cos, sin = float(np.cos(tilt)), float(np.sin(tilt))
    # half width = sqrt((a cos)^2 + (c sin)^2) with c = aspect * a
    a = 0.5 * width / np.sqrt(cos**2 + (aspect * sin) ** 2)
    c = aspect * a
    hx = cx + 0.19 * width  # about 1/3 of the heart right of the midline (image left), 2/3 left of it
    hy = y_base - 0.3 * c
    return _Heart(hx, hy, float(a), float(c), cos, sin)


@dataclass
class _Anatomy:
    cx: float
    lungs: tuple[_Lung, _Lung]  # (patient's right = image left, patient's left = image right)
    heart: _Heart
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


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
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
            _Lung(
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
    heart = _make_heart(cx, thorax_w, heart_base, ctr, tilt, aspect)
    return _Anatomy(
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


def _lung_box(g: _Grid, lung: _Lung, pad: float = 0.0) -> tuple[slice, slice]:
    x0, x1 = lung.x_range()
    return g.box(x0 - pad, x1 + pad, lung.t - 0.02 - pad, lung.b + 0.02 + pad)


def _draw_pneumonia(rng, g: _Grid, an: _Anatomy, opacity: np.ndarray, eps: float) -> None:
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
    nz = _smooth_noise(rng, (6, 6), s_lung.shape)
    s = np.minimum((1.0 - q) * min(rx, ry) + 0.012 * nz, s_lung + 0.004)
    tex = _smooth_noise(rng, (12, 12), s_lung.shape)
    dens = rng.uniform(0.85, 0.95)
    op = _ramp(s, 3 * eps) * (dens + 0.05 * tex)
    np.maximum(opacity[rs, cs], op, out=opacity[rs, cs])


def _draw_covid(rng, g: _Grid, an: _Anatomy, opacity: np.ndarray, eps: float) -> None:
    for lung in an.lungs:
        rs, cs = _lung_box(g, lung)
        x, y = g.x[:, cs], g.y[rs]
        s_lung, u, w = lung.signed(x, y)
        v = (y - lung.t) / (lung.b - lung.t)
        periph = np.clip((w - rng.uniform(0.45, 0.6)) * 3.5, 0.0, 1.0)  # outer third of the lung
        lower = np.clip((v - 0.25) * 2.5, 0.15, 1.0)  # lower zones predominantly
        patch = np.clip(_smooth_noise(rng, (9, 7), s_lung.shape) * 0.9 + 0.35, 0.0, 1.0)
        op = _ramp(s_lung, 2 * eps) * periph * lower * patch * rng.uniform(0.5, 0.6)
        np.maximum(opacity[rs, cs], op, out=opacity[rs, cs])


def _draw_nodules(rng, g: _Grid, an: _Anatomy, opacity: np.ndarray, eps: float,
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
        op = _ramp(r0 - d, max(2 * eps, 0.3 * r0)) * rng.uniform(0.85, 1.0)
        np.maximum(opacity[rs, cs], op, out=opacity[rs, cs])


def _draw_effusion(rng, g: _Grid, an: _Anatomy, opacity: np.ndarray, eps: float) -> None:
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
    op = _ramp(s, 3 * eps) * rng.uniform(0.9, 1.0)
    np.maximum(opacity[rs, cs], op, out=opacity[rs, cs])


# ----------------------------------------------------------------------------------------------------------------
# the generator
# ----------------------------------------------------------------------------------------------------------------


def generate(
    seed: int,
    size: int | tuple[int, int] = 256,
    findings: Sequence[str] = (),
    *,
    text: bool = True,
    noise: float = 0.02,
) -> Phantom:
    """Draw a deterministic phantom PA chest radiograph.

    Args:
        seed: any integer; the anatomy (and the masks) depend on it only.
        size: ``S`` for an ``S x S`` image or ``(H, W)``; at least 32 pixels per side.
        findings: any of :data:`FINDINGS` (order and duplicates ignored):
            ``"pneumonia"`` lobar consolidation (one dense, homogeneous region, usually a lower zone, of one lung);
            ``"covid"`` bilateral peripheral, lower-zone predominant, patchy ground glass;
            ``"nodule"`` one to three small round opacities; ``"effusion"`` fluid with a meniscus at the base of
            one lung (blunted costophrenic angle); ``"cardiomegaly"`` a heart wider than half the thorax
            (cardiothoracic ratio 0.56-0.64 instead of 0.40-0.47).
        text: burn a side marker (``"L"``/``"R"``) and a word (``"PORTABLE"``, ...) into a random corner.
        noise: standard deviation of the quantum-like (signal-dependent) pixel noise at mid grey; 0 disables it.

    Returns:
        A :class:`Phantom`: ``image`` float32 ``(H, W)`` in [0, 1]; ``lung_mask``/``left_mask``/``right_mask`` bool
        ``(H, W)``; ``findings`` in canonical order.
    """
    h, w = _parse_size(size)
    found = _normalise_findings(findings)
    an = _sample_anatomy(_rng(seed, _STREAM_ANATOMY))
    g = _Grid(h, w)
    eps = max(0.006, 1.5 * g.px)  # edge softness (normalised units)
    x, y = g.x, g.y
    cx = an.cx

    # -- soft tissue: torso (thickness profile of a squarish elliptic cylinder: shoulders at the top) and neck -----
    dxb = np.abs((x - cx) / an.body_ax) ** an.body_p
    dyb = (y - an.body_cy) / an.body_ay
    r2 = dxb + dyb * dyb
    density = np.sqrt(np.clip(1.0 - r2, 0.0, None)) * 0.5 + _ramp(1.0 - r2, 0.04) * 0.45
    rs, cs = g.box(cx - 0.15, cx + 0.15, 0.0, 0.3)
    neck = _ramp(0.1 - np.abs(g.x[:, cs] - cx), 0.04) * _ramp(0.2 - g.y[rs], 0.1) * 0.85
    np.maximum(density[rs, cs], neck, out=density[rs, cs])
    del dxb, dyb, r2

    # -- lungs: air fields (heart and aortic knob removed) -------------------------------------------------------
    heart0 = an.heart
    heart = heart0
    if "cardiomegaly" in found:
        frng = _rng(seed, _STREAM_FINDING, FINDINGS.index("cardiomegaly"))
        thorax_w = an.lungs[0].u_lat + an.lungs[1].u_lat
        heart = _make_heart(cx, thorax_w, an.heart_base + frng.uniform(0.0, 0.02),
                            frng.uniform(0.56, 0.64), an.heart_tilt - frng.uniform(0.0, 0.15),
                            an.heart_aspect * frng.uniform(0.85, 0.95))
    ax_, ay_, arx, ary = an.aorta

    masks = []
    air = np.zeros((h, w), np.float32)
    lung_geo = []
    for lung in an.lungs:
        rs, cs = _lung_box(g, lung)
        xs, ys = g.x[:, cs], g.y[rs]
        s, u, wrel = lung.signed(xs, ys)
        s_h0, _ = heart0.signed(xs, ys)
        s_ao = (1.0 - np.sqrt(((xs - ax_) / arx) ** 2 + ((ys - ay_) / ary) ** 2)) * min(arx, ary)
        s_mask = np.minimum(s, -np.maximum(s_h0, s_ao))
        m = np.zeros((h, w), bool)
        m[rs, cs] = s_mask > 0
        masks.append(m)
        if heart is not heart0:
            s_h, _ = heart.signed(xs, ys)
            s_draw = np.minimum(s, -np.maximum(s_h, s_ao))
        else:
            s_draw = s_mask
        # thicker (darker) in the middle of the field, a little brighter at the apex and the lateral edge
        v = (ys - lung.t) / (lung.b - lung.t)
        prof = 0.75 + 0.25 * np.clip(4.0 * wrel * (1.0 - wrel), 0.0, 1.0) * np.clip(v * 3.0, 0.0, 1.0)
        air[rs, cs] = np.maximum(air[rs, cs], _ramp(s_draw, eps) * prof)
        lung_geo.append((rs, cs, u))
    right_mask, left_mask = masks  # patient's right (image left), patient's left (image right)

    # -- findings: opacities that replace lung air ----------------------------------------------------------------
    opacity = np.zeros((h, w), np.float32)
    for name in found:
        frng = _rng(seed, _STREAM_FINDING, FINDINGS.index(name))
        if name == "pneumonia":
            _draw_pneumonia(frng, g, an, opacity, eps)
        elif name == "covid":
            _draw_covid(frng, g, an, opacity, eps)
        elif name == "nodule":
            _draw_nodules(frng, g, an, opacity, eps, (right_mask, left_mask))
        elif name == "effusion":
            _draw_effusion(frng, g, an, opacity, eps)
    if found and opacity.any():
        air *= 1.0 - opacity

    # -- vessels: curvy, tapering lines fanning out from the hila (zero set of a random polar field) -------------
    vrng = np.random.default_rng(an.vessel_seed)
    for k, (lung, (rs, cs, u)) in enumerate(zip(an.lungs, lung_geo)):
        ys = g.y[rs]
        hu, hy = lung.u_med - 0.005, an.hilum_y + 0.02 * k
        dxh, dyh = u - hu, ys - hy
        r = np.sqrt(dxh * dxh + dyh * dyh) + 1e-3
        th = np.arctan2(dyh, dxh) + 0.05 * _smooth_noise(vrng, (8, 6), r.shape)  # tortuous vessels
        lr = np.log(r)
        field = np.zeros_like(r)
        for m_, c_, ph in an.vessels[k]:
            field += np.cos(m_ * th + c_ * lr + ph)
        field = np.abs(field) * np.float32(1.0 / np.sqrt(0.5 * len(an.vessels[k])))
        halfw = np.minimum(0.045 * np.exp(-r / 0.15) / r, 0.5)  # tapering width, in field units
        ves = _ramp(halfw - field, 0.15) * np.exp(-r / 0.25) * 0.45
        ves += np.exp(-((dxh - 0.035) / 0.035) ** 2 - (dyh / 0.07) ** 2) * 0.3  # hilar vessels
        air[rs, cs] -= air[rs, cs] * np.clip(ves, 0.0, 0.8)

    density -= an.lung_air * air
    del air

    # -- heart, mediastinum, aortic knob, trachea, gastric bubble -------------------------------------------------
    x0, x1, y0, y1 = heart.bounds()
    rs, cs = g.box(x0 - 0.02, x1 + 0.02, y0 - 0.02, y1 + 0.02)
    s_h, q2 = heart.signed(g.x[:, cs], g.y[rs])
    y_dia = max(lg.b - lg.dome_h for lg in an.lungs)
    thick = 0.04 + 0.06 * np.sqrt(np.clip(1.0 - q2, 0.0, 1.0))
    density[rs, cs] += _ramp(s_h, eps) * _ramp(y_dia - g.y[rs], 0.04) * thick
    rs, cs = g.box(ax_ - arx - 0.02, ax_ + arx + 0.02, ay_ - ary - 0.02, ay_ + ary + 0.02)
    s_ao = (1.0 - np.sqrt(((g.x[:, cs] - ax_) / arx) ** 2 + ((g.y[rs] - ay_) / ary) ** 2)) * min(arx, ary)
    density[rs, cs] += _ramp(s_ao, eps) * 0.03
    carina = an.hilum_y - 0.03
    rs, cs = g.box(cx - 0.05, cx + 0.05, 0.0, carina + 0.01)
    tx = g.x[:, cs] - (cx + 0.02 * (g.y[rs] - carina))
    density[rs, cs] -= _ramp(0.013 - np.abs(tx), eps) * _ramp(carina - g.y[rs], 0.02) * 0.2
    bx, by, brx, bry = an.bubble
    rs, cs = g.box(bx - brx - 0.02, bx + brx + 0.02, by - bry - 0.02, by + bry + 0.02)
    sb = 1.0 - np.sqrt(((g.x[:, cs] - bx) / brx) ** 2 + ((g.y[rs] - by) / bry) ** 2)
    density[rs, cs] -= _ramp(sb * min(brx, bry), eps) * np.clip((g.y[rs] - by) / bry + 0.6, 0.0, 1.0) * 0.2

    # -- bones: spine, posterior ribs, clavicles -------------------------------------------------------------------
    rs, cs = g.box(cx - 0.06, cx + 0.06, 0.0, 1.0)
    xs, ys = g.x[:, cs], g.y[rs]
    vert = 0.8 + 0.2 * np.cos(np.pi * (ys - an.rib_y1) / (an.rib_s0 * 1.1)) ** 2
    density[rs, cs] += _ramp(0.034 - np.abs(xs - cx), eps) * vert * 0.13
    density[rs, cs] += _ramp(0.008 - np.abs(np.abs(xs - cx) - 0.027), eps) * 0.05  # pedicles / cortex

    ymax = max(lg.b for lg in an.lungs) + 0.05
    rs, cs = g.box(cx - 0.46, cx + 0.46, an.rib_y1 - 0.05, ymax)
    xs, ys = g.x[:, cs], g.y[rs]
    u = np.abs(xs - cx)
    yy = ys - (-an.rib_a * u + an.rib_b * u * u + 2.0 * u * u * u) * (1.0 + 0.8 * (ys - an.rib_y1))
    z = np.clip((yy - an.rib_y1) / an.rib_s0, 0.0, None)
    p = np.log1p(an.rib_growth * z) * (1.0 / an.rib_growth)  # rib index, spacing grows caudally
    idx = np.minimum(p.astype(np.int32), len(an.rib_jitter) - 1)
    jit = an.rib_jitter[idx]
    band = 0.19 + jit[..., 1] - np.abs(p - idx - 0.5 - jit[..., 0])  # each rib ~40 % of its period
    rib = _ramp(band, 0.06) * (0.8 + 0.5 * _ramp(0.06 - band, 0.05))  # brighter cortical edges
    lat_env = np.zeros_like(rib)
    for lung in an.lungs:
        side_sel = (xs - cx) * lung.side > 0
        _, lat = lung.edges(np.minimum(ys, lung.b))
        below = 0.3 + 0.7 * _ramp(lung.dome(u) + 0.01 - ys, 0.03)
        lat_env = np.where(side_sel, _ramp(lat + 0.03 - u, 0.02) * _ramp(lung.b + 0.02 - ys, 0.04) * below, lat_env)
    env = lat_env * _ramp(u - 0.03, 0.02) * _ramp(an.rib_n - p, 0.3) * _ramp(yy - an.rib_y1 + 0.01, 0.02)
    density[rs, cs] += rib * env * 0.1
    # faint anterior ribs, sloping down towards the midline
    ya = ys + 0.45 * u - 0.9 * u * u
    pa = (ya - an.rib_y1 - 0.12) / (an.rib_s0 * 1.5)
    fa = np.abs(pa - np.floor(pa) - 0.5)
    ant_env = env * _ramp(u - 0.1, 0.05) * _ramp(an.lungs[0].b - 0.15 - ya, 0.05)
    density[rs, cs] += _ramp(0.17 - fa, 0.08) * ant_env * 0.05

    for side in (-1, 1):
        x_in, x_out = cx + side * 0.02, cx + side * 0.34
        rs, cs = g.box(min(x_in, x_out) - 0.03, max(x_in, x_out) + 0.03, an.clav_y - 0.14, an.clav_y + 0.06)
        xs, ys = g.x[:, cs], g.y[rs]
        uu = (xs - cx) * side
        yc = an.clav_y - an.clav_slope * uu + 0.018 * np.sin(uu / 0.34 * 2.0 * np.pi)
        thick = 0.012 + 0.006 * np.exp(-((uu - 0.03) / 0.03) ** 2)
        env = _ramp(uu - 0.03, 0.01) * _ramp(0.34 - uu, 0.03)
        clav = _ramp(thick - np.abs(ys - yc), eps)
        density[rs, cs] += clav * (0.75 + 0.5 * _ramp(0.004 - (thick - np.abs(ys - yc)), 0.004)) * env * 0.16

    # -- exposure: density -> brightness, unsharpness, quantum noise ----------------------------------------------
    d0, k = 0.12, an.contrast
    img = 1.0 - np.exp(-k * np.clip(density - d0, 0.0, None))
    img *= np.float32(1.0 / (1.0 - np.exp(-k * (1.35 - d0))))
    img = np.clip(img, 0.0, 1.0) ** an.gamma
    img = img.astype(np.float32)
    img = _blur121(img)
    tissue = _smooth_noise(np.random.default_rng(an.tissue_seed), (24, 24), (h, w))
    img += 0.012 * tissue  # low-frequency mottle (overlying soft tissue, scatter)
    img += 0.02  # detector offset: the background is not perfectly black
    if noise > 0:
        nrng = _rng(seed, _STREAM_NOISE)
        sig = np.sqrt(np.clip(img, 0.0, 1.0) + 0.05) * np.float32(noise / np.sqrt(0.55))
        img += sig * nrng.standard_normal((h, w), dtype=np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    if text:
        _burn_text(_rng(seed, _STREAM_TEXT), img)
    lung_mask = left_mask | right_mask
    return Phantom(image=img, lung_mask=lung_mask, left_mask=left_mask, right_mask=right_mask, findings=found)


def _blur121(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge replication (float32 in, float32 out)."""
    p = np.pad(img, 1, mode="edge")
    v = p[:-2] + 2.0 * p[1:-1] + p[2:]
    return (v[:, :-2] + 2.0 * v[:, 1:-1] + v[:, 2:]) * np.float32(1.0 / 16.0)


_WORDS = ("PORTABLE", "PA ERECT", "AP SUPINE", "UPRIGHT", "AP SITTING", "INSP")


def _burn_text(rng: np.random.Generator, img: np.ndarray) -> None:
    """Burn a side marker and a word into a random corner of ``img`` (in place), as white pixels."""
    h, w = img.shape
    marker = "L" if rng.random() < 0.7 else "R"
    word = _WORDS[int(rng.integers(0, len(_WORDS)))]
    corner = int(rng.integers(0, 4))  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
    level = float(rng.uniform(0.9, 1.0))
    fsize = max(8, round(min(h, w) / 24))
    try:
        font = ImageFont.load_default(size=fsize)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    lines = [marker * 1, word]
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    boxes = [probe.textbbox((0, 0), s, font=font) for s in lines]
    tw = max(b[2] for b in boxes) + 2
    lh = max(b[3] for b in boxes) + max(1, fsize // 4)
    th = lh * len(lines) + 2
    tw, th = min(tw, w // 2), min(th, h // 2)
    layer = Image.new("L", (tw, th), 0)
    draw = ImageDraw.Draw(layer)
    for i, s in enumerate(lines):
        draw.text((1, 1 + i * lh), s, fill=255, font=font)
    mask = np.asarray(layer, dtype=np.float32) * np.float32(level / 255.0)
    margin_y, margin_x = max(2, h // 40), max(2, w // 40)
    r0 = margin_y if corner < 2 else h - margin_y - th
    c0 = margin_x if corner % 2 == 0 else w - margin_x - tw
    r0, c0 = max(r0, 0), max(c0, 0)
    region = img[r0 : r0 + th, c0 : c0 + tw]
    np.maximum(region, mask[: region.shape[0], : region.shape[1]], out=region)


# ----------------------------------------------------------------------------------------------------------------
# labels -> findings
# ----------------------------------------------------------------------------------------------------------------


def sample_findings(rng: np.random.Generator, label: str) -> tuple[str, ...]:
    """Findings for a class label, drawn with ``rng``.

    ``"normal"`` -> ``()``; ``"pneumonia"`` / ``"covid"`` (or any name in :data:`FINDINGS`) -> that finding;
    ``"abnormal"`` -> one or more of ``nodule`` / ``effusion`` / ``cardiomegaly`` (one with probability 0.6, two
    0.3, three 0.1), in canonical order.
    """
    label = str(label).lower()
    if label == "normal":
        return ()
    if label == "abnormal":
        k = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        pick = set(rng.choice(len(_ABNORMAL), size=k, replace=False).tolist())
        return tuple(f for i, f in enumerate(_ABNORMAL) if i in pick)
    if label in FINDINGS:
        return (label,)
    raise ValueError(f"unknown label {label!r}; known: {LABELS} or a finding in {FINDINGS}")


# ----------------------------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------------------------


def _as_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D (H, W) image, got shape {a.shape}")
    return np.clip(np.nan_to_num(a), 0.0, 1.0)


def _prepare(path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def write_png8(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a float image ``(H, W)`` in [0, 1] as an 8-bit grayscale PNG (mode ``"L"``, ``round(255 * v)``)."""
    p = _prepare(path)
    a = np.round(_as_image(image) * 255.0).astype(np.uint8)
    Image.fromarray(a).save(p, format="PNG")
    return p


def write_png16(path: str | os.PathLike, image: np.ndarray, bits: int = 12) -> Path:
    """Write a float image ``(H, W)`` in [0, 1] as a 16-bit grayscale PNG (``"I;16"``).

    Values are ``round(v * (2**bits - 1))`` -- real 16-bit chest-X-ray PNGs often use only 12 bits.
    """
    if not 1 <= int(bits) <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    p = _prepare(path)
    a = np.round(_as_image(image) * float(2 ** int(bits) - 1)).astype(np.uint16)
    Image.fromarray(a).save(p, format="PNG")
    return p


def write_mask_png(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write a boolean mask ``(H, W)`` as an 8-bit PNG with values 0 / 255 (like Montgomery's ManualMask files)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D (H, W) mask, got shape {m.shape}")
    p = _prepare(path)
    Image.fromarray(np.where(m.astype(bool), 255, 0).astype(np.uint8)).save(p, format="PNG")
    return p


_DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def write_dicom(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    window: tuple[float, float] | None = None,
) -> Path:
    """Write a float image ``(H, W)`` in [0, 1] as a single-frame DICOM file (Digital X-Ray, modality ``DX``).

    Explicit VR little endian, ``BitsAllocated`` 16, unsigned (``PixelRepresentation`` 0), one sample per pixel.
    The intended (modality) values are ``image * (2**bits_stored - 1)``; stored values are
    ``round((intended - rescale_intercept) / rescale_slope)``, so applying the modality LUT
    (``stored * slope + intercept``) recovers them. For ``"MONOCHROME1"`` the *intended* values are inverted
    (``(1 - image) * (2**bits_stored - 1)``), so a reader that inverts MONOCHROME1 shows the same picture as the
    MONOCHROME2 file of the same image. ``window`` is ``(center, width)`` in modality units, written as
    ``WindowCenter``/``WindowWidth`` when given. Raises ``ValueError`` if stored values would not fit in
    ``bits_stored`` bits. UIDs are derived from the content, so the same arguments give the same bytes.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    photometric = photometric.upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    bits_stored = int(bits_stored)
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be in 1..16, got {bits_stored}")
    if rescale_slope == 0:
        raise ValueError("rescale_slope must be non-zero")
    a = _as_image(image)
    maxval = float(2**bits_stored - 1)
    intended = (1.0 - a if photometric == "MONOCHROME1" else a) * maxval
    stored = np.round((intended - rescale_intercept) / rescale_slope)
    if stored.min() < 0 or stored.max() > maxval:
        raise ValueError(
            f"stored values span [{stored.min():.0f}, {stored.max():.0f}], outside 0..{maxval:.0f} for "
            f"bits_stored={bits_stored}; adjust rescale_slope/rescale_intercept or bits_stored"
        )
    pixels = stored.astype(np.uint16)
    rows, cols = pixels.shape

    header = repr((rows, cols, photometric, bits_stored, rescale_slope, rescale_intercept, window))
    digest = hashlib.sha256(pixels.tobytes() + header.encode()).hexdigest()
    study_uid = generate_uid(entropy_srcs=[digest, "study"])
    series_uid = generate_uid(entropy_srcs=[digest, "series"])
    sop_uid = generate_uid(entropy_srcs=[digest, "sop"])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _DX_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    p = _prepare(path)
    ds = FileDataset(str(p), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = _DX_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "DX"
    ds.PatientName = "Phantom^SPCXR"
    ds.PatientID = "SPCXR-" + digest[:8]
    ds.StudyDate = "20000101"
    ds.StudyTime = "000000"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]  # image right = patient's left, image down = feet
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{float(rescale_slope):.10g}"
    ds.RescaleIntercept = f"{float(rescale_intercept):.10g}"
    ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter = f"{float(window[0]):.10g}"
        ds.WindowWidth = f"{float(window[1]):.10g}"
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(p, enforce_file_format=True)
    return p
