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

from .phantom_anatomy import (FINDINGS, Grid, draw_covid, draw_effusion, draw_nodules, draw_pneumonia, lung_box,
                              make_heart, normalise_findings, parse_size, ramp, random_stream, sample_anatomy,
                              smooth_noise)

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

#: Class labels understood by :func:`sample_findings`.
LABELS = ("normal", "pneumonia", "covid", "abnormal")
_ABNORMAL = ("nodule", "effusion", "cardiomegaly")

# Random stream ids (second element of the seed sequence).
_STREAM_ANATOMY, _STREAM_FINDING, _STREAM_NOISE, _STREAM_TEXT = 0, 1, 2, 3


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
    h, w = parse_size(size)
    found = normalise_findings(findings)
    an = sample_anatomy(random_stream(seed, _STREAM_ANATOMY))
    g = Grid(h, w)
    eps = max(0.006, 1.5 * g.px)  # edge softness (normalised units)
    x, y = g.x, g.y
    cx = an.cx

    # -- soft tissue: torso (thickness profile of a squarish elliptic cylinder: shoulders at the top) and neck -----
    dxb = np.abs((x - cx) / an.body_ax) ** an.body_p
    dyb = (y - an.body_cy) / an.body_ay
    r2 = dxb + dyb * dyb
    density = np.sqrt(np.clip(1.0 - r2, 0.0, None)) * 0.5 + ramp(1.0 - r2, 0.04) * 0.45
    rs, cs = g.box(cx - 0.15, cx + 0.15, 0.0, 0.3)
    neck = ramp(0.1 - np.abs(g.x[:, cs] - cx), 0.04) * ramp(0.2 - g.y[rs], 0.1) * 0.85
    np.maximum(density[rs, cs], neck, out=density[rs, cs])
    del dxb, dyb, r2

    # -- lungs: air fields (heart and aortic knob removed) -------------------------------------------------------
    heart0 = an.heart
    heart = heart0
    if "cardiomegaly" in found:
        frng = random_stream(seed, _STREAM_FINDING, FINDINGS.index("cardiomegaly"))
        thorax_w = an.lungs[0].u_lat + an.lungs[1].u_lat
        heart = make_heart(cx, thorax_w, an.heart_base + frng.uniform(0.0, 0.02),
                            frng.uniform(0.56, 0.64), an.heart_tilt - frng.uniform(0.0, 0.15),
                            an.heart_aspect * frng.uniform(0.85, 0.95))
    ax_, ay_, arx, ary = an.aorta

    masks = []
    air = np.zeros((h, w), np.float32)
    lung_geo = []
    for lung in an.lungs:
        rs, cs = lung_box(g, lung)
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
        air[rs, cs] = np.maximum(air[rs, cs], ramp(s_draw, eps) * prof)
        lung_geo.append((rs, cs, u))
    right_mask, left_mask = masks  # patient's right (image left), patient's left (image right)

    # -- findings: opacities that replace lung air ----------------------------------------------------------------
    opacity = np.zeros((h, w), np.float32)
    for name in found:
        frng = random_stream(seed, _STREAM_FINDING, FINDINGS.index(name))
        if name == "pneumonia":
            draw_pneumonia(frng, g, an, opacity, eps)
        elif name == "covid":
            draw_covid(frng, g, an, opacity, eps)
        elif name == "nodule":
            draw_nodules(frng, g, an, opacity, eps, (right_mask, left_mask))
        elif name == "effusion":
            draw_effusion(frng, g, an, opacity, eps)
    if found and opacity.any():
        air *= 1.0 - opacity

    # -- vessels: curvy, tapering lines fanning out from the hila (zero set of a random polar field) -------------
    vrng = np.random.default_rng(an.vessel_seed)
    for k, (lung, (rs, cs, u)) in enumerate(zip(an.lungs, lung_geo)):
        ys = g.y[rs]
        hu, hy = lung.u_med - 0.005, an.hilum_y + 0.02 * k
        dxh, dyh = u - hu, ys - hy
        r = np.sqrt(dxh * dxh + dyh * dyh) + 1e-3
        th = np.arctan2(dyh, dxh) + 0.05 * smooth_noise(vrng, (8, 6), r.shape)  # tortuous vessels
        lr = np.log(r)
        field = np.zeros_like(r)
        for m_, c_, ph in an.vessels[k]:
            field += np.cos(m_ * th + c_ * lr + ph)
        field = np.abs(field) * np.float32(1.0 / np.sqrt(0.5 * len(an.vessels[k])))
        halfw = np.minimum(0.045 * np.exp(-r / 0.15) / r, 0.5)  # tapering width, in field units
        ves = ramp(halfw - field, 0.15) * np.exp(-r / 0.25) * 0.45
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
    density[rs, cs] += ramp(s_h, eps) * ramp(y_dia - g.y[rs], 0.04) * thick
    rs, cs = g.box(ax_ - arx - 0.02, ax_ + arx + 0.02, ay_ - ary - 0.02, ay_ + ary + 0.02)
    s_ao = (1.0 - np.sqrt(((g.x[:, cs] - ax_) / arx) ** 2 + ((g.y[rs] - ay_) / ary) ** 2)) * min(arx, ary)
    density[rs, cs] += ramp(s_ao, eps) * 0.03
    carina = an.hilum_y - 0.03
    rs, cs = g.box(cx - 0.05, cx + 0.05, 0.0, carina + 0.01)
    tx = g.x[:, cs] - (cx + 0.02 * (g.y[rs] - carina))
    density[rs, cs] -= ramp(0.013 - np.abs(tx), eps) * ramp(carina - g.y[rs], 0.02) * 0.2
    bx, by, brx, bry = an.bubble
    rs, cs = g.box(bx - brx - 0.02, bx + brx + 0.02, by - bry - 0.02, by + bry + 0.02)
    sb = 1.0 - np.sqrt(((g.x[:, cs] - bx) / brx) ** 2 + ((g.y[rs] - by) / bry) ** 2)
    density[rs, cs] -= ramp(sb * min(brx, bry), eps) * np.clip((g.y[rs] - by) / bry + 0.6, 0.0, 1.0) * 0.2

    # -- bones: spine, posterior ribs, clavicles -------------------------------------------------------------------
    rs, cs = g.box(cx - 0.06, cx + 0.06, 0.0, 1.0)
    xs, ys = g.x[:, cs], g.y[rs]
    vert = 0.8 + 0.2 * np.cos(np.pi * (ys - an.rib_y1) / (an.rib_s0 * 1.1)) ** 2
    density[rs, cs] += ramp(0.034 - np.abs(xs - cx), eps) * vert * 0.13
    density[rs, cs] += ramp(0.008 - np.abs(np.abs(xs - cx) - 0.027), eps) * 0.05  # pedicles / cortex

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
    rib = ramp(band, 0.06) * (0.8 + 0.5 * ramp(0.06 - band, 0.05))  # brighter cortical edges
    lat_env = np.zeros_like(rib)
    for lung in an.lungs:
        side_sel = (xs - cx) * lung.side > 0
        _, lat = lung.edges(np.minimum(ys, lung.b))
        below = 0.3 + 0.7 * ramp(lung.dome(u) + 0.01 - ys, 0.03)
        lat_env = np.where(side_sel, ramp(lat + 0.03 - u, 0.02) * ramp(lung.b + 0.02 - ys, 0.04) * below, lat_env)
    env = lat_env * ramp(u - 0.03, 0.02) * ramp(an.rib_n - p, 0.3) * ramp(yy - an.rib_y1 + 0.01, 0.02)
    density[rs, cs] += rib * env * 0.1
    # faint anterior ribs, sloping down towards the midline
    ya = ys + 0.45 * u - 0.9 * u * u
    pa = (ya - an.rib_y1 - 0.12) / (an.rib_s0 * 1.5)
    fa = np.abs(pa - np.floor(pa) - 0.5)
    ant_env = env * ramp(u - 0.1, 0.05) * ramp(an.lungs[0].b - 0.15 - ya, 0.05)
    density[rs, cs] += ramp(0.17 - fa, 0.08) * ant_env * 0.05

    for side in (-1, 1):
        x_in, x_out = cx + side * 0.02, cx + side * 0.34
        rs, cs = g.box(min(x_in, x_out) - 0.03, max(x_in, x_out) + 0.03, an.clav_y - 0.14, an.clav_y + 0.06)
        xs, ys = g.x[:, cs], g.y[rs]
        uu = (xs - cx) * side
        yc = an.clav_y - an.clav_slope * uu + 0.018 * np.sin(uu / 0.34 * 2.0 * np.pi)
        thick = 0.012 + 0.006 * np.exp(-((uu - 0.03) / 0.03) ** 2)
        env = ramp(uu - 0.03, 0.01) * ramp(0.34 - uu, 0.03)
        clav = ramp(thick - np.abs(ys - yc), eps)
        density[rs, cs] += clav * (0.75 + 0.5 * ramp(0.004 - (thick - np.abs(ys - yc)), 0.004)) * env * 0.16

    # -- exposure: density -> brightness, unsharpness, quantum noise ----------------------------------------------
    d0, k = 0.12, an.contrast
    img = 1.0 - np.exp(-k * np.clip(density - d0, 0.0, None))
    img *= np.float32(1.0 / (1.0 - np.exp(-k * (1.35 - d0))))
    img = np.clip(img, 0.0, 1.0) ** an.gamma
    img = img.astype(np.float32)
    img = _blur121(img)
    tissue = smooth_noise(np.random.default_rng(an.tissue_seed), (24, 24), (h, w))
    img += 0.012 * tissue  # low-frequency mottle (overlying soft tissue, scatter)
    img += 0.02  # detector offset: the background is not perfectly black
    if noise > 0:
        nrng = random_stream(seed, _STREAM_NOISE)
        sig = np.sqrt(np.clip(img, 0.0, 1.0) + 0.05) * np.float32(noise / np.sqrt(0.55))
        img += sig * nrng.standard_normal((h, w), dtype=np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    if text:
        _burn_text(random_stream(seed, _STREAM_TEXT), img)
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
    tags: dict | None = None,
) -> Path:
    """Write a float image ``(H, W)`` in [0, 1] as a single-frame DICOM file (Digital X-Ray, modality ``DX``).

    Explicit VR little endian, ``BitsAllocated`` 16, unsigned (``PixelRepresentation`` 0), one sample per pixel.
    The intended (modality) values are ``image * (2**bits_stored - 1)``; stored values are
    ``round((intended - rescale_intercept) / rescale_slope)``, so applying the modality LUT
    (``stored * slope + intercept``) recovers them. For ``"MONOCHROME1"`` the *intended* values are inverted
    (``(1 - image) * (2**bits_stored - 1)``), so a reader that inverts MONOCHROME1 shows the same picture as the
    MONOCHROME2 file of the same image. ``window`` is ``(center, width)`` in modality units, written as
    ``WindowCenter``/``WindowWidth`` when given. Raises ``ValueError`` if stored values would not fit in
    ``bits_stored`` bits. UIDs are derived from the content, so the same arguments give the same bytes. ``tags``:
    more header elements by keyword (``{"PatientSex": "F", "PatientAge": "063Y"}``), set last.
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
    for keyword, value in (tags or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(p, enforce_file_format=True)
    return p
