"""Static/dynamic masks for fixed cameras: 255 = static background, 0 = dynamic (the training convention).

The default method needs no learned weights. Per camera, a background model is fitted on a bounded sample of
frames (temporal median, and a robust per-pixel spread from the median absolute deviation, MAD); each frame's
colour difference to the median is thresholded robustly (a multiple of the spread, never below an absolute
floor), then cleaned morphologically (open, close, small components removed, holes filled, optional dilation).

A :class:`Segmenter` is pluggable: ``fit`` sees a camera's sample frames once, ``segment`` returns a frame's
dynamic region. :class:`Sam2Segmenter` loads a SAM 2 model from a local checkpoint (no downloads) and refines the
background-difference proposals into object masks.

Glossary: H x W image size, S sampled frames. Frames are (H, W, 3) uint8 RGB; a *dynamic* map is (H, W) bool with
True = moving; a *mask file* is (H, W) uint8 with 255 = static, 0 = dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

import numpy as np

from splatworks.config import option
from splatworks.errors import UserError

STATIC, DYNAMIC = 255, 0
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this = its standard deviation


@dataclass
class MaskConfig:
    method: str = option("background", "How to find moving pixels: 'background' (median background model, no "
                         "weights needed), 'sam2' (SAM 2 from --masks.segmenter-checkpoint, refining the background "
                         "proposals), or 'none' (no masks written).", choices=("background", "sam2", "none"))
    samples: int = option(48, "Frames per camera sampled (evenly over the clip) for the background model; bounds "
                          "memory at samples x H x W x 3 bytes.")
    threshold: float = option(3.0, "A pixel is dynamic when its colour difference to the background exceeds "
                              "this many robust standard deviations (MAD x 1.4826) ...")
    min_difference: float = option(18.0, "... and at least this absolute difference (0-255 scale, max over "
                                   "RGB) so that flat, noise-free regions do not flicker.")
    hysteresis: float = option(0.6, "Hysteresis: pixels above this fraction of the threshold count as dynamic "
                               "when connected to a pixel above the full threshold (grows detections into "
                               "low-contrast parts, e.g. a grey shirt on a grey wall); 1 = off.")
    shadow_angle: float = option(0.0, "Differences that only darken the background (brightness x 0.5-0.97) with "
                                 "a colour within this angle (degrees) are shadows, not objects (0 = keep them).")
    shadow_strong: bool = option(False, "Also drop shadow pixels above the full threshold (default: only the "
                                 "weaker ones that hysteresis would add).")
    spread_cap: float = option(3.0, "Cap each pixel's spread at this multiple of the image's median spread (0 = "
                               "no cap): where people stood for long the spread is theirs, not the noise's.")
    refine: bool = option(False, "Fit the background twice: the second median ignores the pixels that the first "
                          "pass found dynamic (removes ghosts of people who stood still for part of the clip).")
    blur: int = option(5, "Gaussian blur kernel (pixels, odd; 0 = none) applied before differencing, to ignore "
                       "compression noise.")
    open_px: int = option(3, "Morphological opening kernel (pixels): removes speckle.")
    close_px: int = option(15, "Morphological closing kernel (pixels): joins nearby parts of one object.")
    min_area: float = option(0.0008, "Connected dynamic regions smaller than this fraction of the image are "
                             "dropped.")
    fill_holes: bool = option(True, "Fill holes enclosed by a dynamic region.")
    dilate_px: int = option(0, "Grow the dynamic region by this many pixels (safety margin for training).")
    segmenter_checkpoint: Path | None = option(None, "Local SAM 2 checkpoint (.pt) for --masks.method sam2.")
    segmenter_config: str = option("", "SAM 2 model config name (e.g. configs/sam2.1/sam2.1_hiera_l.yaml); "
                                   "guessed from the checkpoint name when empty.")
    preview_frames: int = option(8, "Frames per camera shown in the contact sheet previews/<camera>.png "
                                 "(0 = no previews).")


# ---- background model ---------------------------------------------------------------------------------------
@dataclass
class BackgroundModel:
    """Per-camera background: ``median`` (H, W, 3) float32 in 0-255 and ``sigma`` (H, W) float32 robust spread."""

    median: np.ndarray
    sigma: np.ndarray

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB background image (people that move are gone; useful for calibration)."""
        return np.clip(np.rint(self.median), 0, 255).astype(np.uint8)


def median_image(frames: list[np.ndarray]) -> np.ndarray:
    """(H, W, 3) uint8 per-pixel temporal median of S (H, W, 3) uint8 frames: the static background, sharp."""
    return np.median(np.stack(frames), axis=0).round().astype(np.uint8)


def _blur(rgb: np.ndarray, k: int) -> np.ndarray:
    import cv2

    img = rgb.astype(np.float32)
    return cv2.GaussianBlur(img, (k, k), 0) if k and k > 1 else img


def _nan_median(x: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaNs (NaN where all are NaN); a sort is much faster than ``np.nanmedian``."""
    x = np.sort(x, axis=0)  # NaNs sort last
    n = (~np.isnan(x)).sum(axis=0)
    lo = np.take_along_axis(x, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(x, np.maximum(n // 2, 0)[None], axis=0)[0]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)


def _robust_fit(stack: np.ndarray, spread_cap: float, fallback: BackgroundModel | None = None) -> BackgroundModel:
    """Median and capped MAD spread of a (S, H, W, 3) float32 stack (NaN = sample excluded).

    Pixels with every sample excluded take ``fallback``'s values.
    """
    median = _nan_median(stack)
    sigma = MAD_TO_SIGMA * _nan_median(np.abs(stack - median[None])).max(axis=-1)  # (H, W): worst channel
    if fallback is not None:
        gone = np.isnan(sigma)
        median[gone], sigma[gone] = fallback.median[gone], fallback.sigma[gone]
    if spread_cap > 0:
        sigma = np.minimum(sigma, spread_cap * float(np.median(sigma)))
    return BackgroundModel(median=median.astype(np.float32), sigma=sigma.astype(np.float32))


def fit_background(frames: Iterable[np.ndarray], cfg: MaskConfig | None = None) -> BackgroundModel:
    """Temporal median and robust spread over sampled frames (optionally refined without the dynamic pixels).

    Args:
        frames: S (H, W, 3) uint8 RGB frames (a bounded sample: they are stacked in memory, S x H x W x 12 bytes).
        cfg: blur, spread cap and refinement settings (defaults when None).
    """
    cfg = cfg or MaskConfig()
    stack = np.stack([_blur(f, cfg.blur) for f in frames])  # (S, H, W, 3) float32
    if len(stack) == 0:
        raise UserError("no frames to fit a background model on")
    model = _robust_fit(stack, cfg.spread_cap)
    if not cfg.refine:
        return model
    # Second pass: drop each sample's (dilated) dynamic pixels; where that drops every sample, keep pass one.
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    for k in range(len(stack)):
        diff = np.abs(stack[k] - model.median).max(axis=-1)
        dyn = clean_dynamic(diff > np.maximum(cfg.threshold * model.sigma, cfg.min_difference), cfg)
        stack[k][cv2.dilate(dyn.astype(np.uint8), kernel).astype(bool)] = np.nan
    return _robust_fit(stack, cfg.spread_cap, fallback=model)


def difference_map(rgb: np.ndarray, bg: BackgroundModel, cfg: MaskConfig) -> np.ndarray:
    """(H, W) bool: pixels whose colour differs from the background beyond the robust threshold (before clean-up).

    With hysteresis < 1, weaker differences count too where they connect to a strong one.
    """
    frame = _blur(rgb, cfg.blur)
    diff = np.abs(frame - bg.median).max(axis=-1)
    limit = np.maximum(cfg.threshold * bg.sigma, cfg.min_difference)
    strong = diff > limit
    shadow = shadow_map(frame, bg.median, cfg.shadow_angle) if cfg.shadow_angle > 0 else None
    if shadow is not None and cfg.shadow_strong:
        strong &= ~shadow
    if cfg.hysteresis >= 1 or not strong.any():
        return strong
    import cv2

    weak = diff > cfg.hysteresis * limit
    if shadow is not None:
        weak &= ~shadow | strong
    weak = weak.astype(np.uint8)
    n, labels = cv2.connectedComponents(weak, connectivity=8)
    seeded = np.zeros(n, dtype=bool)
    seeded[np.unique(labels[strong])] = True
    seeded[0] = False
    return seeded[labels]


def shadow_map(frame: np.ndarray, background: np.ndarray, max_angle_deg: float,
               ratio: tuple[float, float] = (0.5, 0.97)) -> np.ndarray:
    """(H, W) bool: pixels that look like the background in shadow (darker by ``ratio``, same colour direction).

    Args:
        frame, background: (H, W, 3) float32 RGB in 0-255.
    """
    eps = 1e-3
    lum_f, lum_b = frame.sum(axis=-1), background.sum(axis=-1) + eps
    norms = np.linalg.norm(frame, axis=-1) * np.linalg.norm(background, axis=-1) + eps
    cos = (frame * background).sum(axis=-1) / norms
    darker = (lum_f / lum_b > ratio[0]) & (lum_f / lum_b < ratio[1])
    return darker & (cos > np.cos(np.radians(max_angle_deg)))


def clean_dynamic(dynamic: np.ndarray, cfg: MaskConfig) -> np.ndarray:
    """Morphological clean-up of a (H, W) bool dynamic map: open, close, small components, holes, dilation."""
    import cv2

    m = dynamic.astype(np.uint8)
    if cfg.open_px > 1:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cfg.open_px,) * 2))
    if cfg.close_px > 1:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cfg.close_px,) * 2))
    min_px = cfg.min_area * m.shape[0] * m.shape[1]
    if min_px > 0 and m.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        keep = np.zeros(n, dtype=np.uint8)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
        m = keep[labels]
    if cfg.fill_holes and m.any():
        # Background reachable from the border stays background; everything else enclosed becomes dynamic.
        padded = np.pad(m, 1)
        flood = padded.copy()
        cv2.floodFill(flood, None, (0, 0), 1)
        holes = (flood == 0)[1:-1, 1:-1]
        m = m | holes.astype(np.uint8)
    if cfg.dilate_px > 0:
        k = 2 * cfg.dilate_px + 1
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return m.astype(bool)


# ---- segmenters ---------------------------------------------------------------------------------------------
@runtime_checkable
class Segmenter(Protocol):
    """Finds the moving pixels of one fixed camera's frames.

    ``fit`` is called once per camera with a bounded sample of its frames; ``segment`` then once per frame and
    returns a (H, W) bool map, True = dynamic. Implementations keep per-camera state between the two calls.
    """

    name: str

    def fit(self, camera: str, samples: list[np.ndarray]) -> None: ...

    def segment(self, camera: str, rgb: np.ndarray) -> np.ndarray: ...


class BackgroundSegmenter:
    """The default: median background model, robust difference threshold, morphological clean-up."""

    name = "background"

    def __init__(self, cfg: MaskConfig) -> None:
        self.cfg = cfg
        self.models: dict[str, BackgroundModel] = {}

    def fit(self, camera: str, samples: list[np.ndarray]) -> None:
        self.models[camera] = fit_background(samples, self.cfg)

    def segment(self, camera: str, rgb: np.ndarray) -> np.ndarray:
        return clean_dynamic(difference_map(rgb, self.models[camera], self.cfg), self.cfg)


SAM2_HELP = ("SAM 2 masks need the `sam2` package and a local checkpoint: `pip install "
             "git+https://github.com/facebookresearch/sam2` (or `pip install sam2`), download a checkpoint such as "
             "sam2.1_hiera_large.pt yourself, and pass --masks.method sam2 --masks.segmenter-checkpoint PATH. "
             "Without them, use the default --masks.method background (no weights needed).")


def _guess_sam2_config(checkpoint: Path) -> str:
    stem = checkpoint.stem.lower()
    size = next((s for s in ("tiny", "small", "base_plus", "large") if s in stem), "large")
    short = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}[size]
    version = "sam2.1" if "2.1" in stem else "sam2"
    return f"configs/{version}/{version}_hiera_{short}.yaml"


class Sam2Segmenter:
    """SAM 2 from a local checkpoint, prompted with the boxes of the background-difference regions.

    The background model says *where* something moves; SAM 2 draws the object's exact outline inside each box.
    """

    name = "sam2"

    def __init__(self, cfg: MaskConfig, device: str | None = None) -> None:
        ckpt = cfg.segmenter_checkpoint
        if ckpt is None:
            raise UserError("--masks.method sam2 needs --masks.segmenter-checkpoint PATH. " + SAM2_HELP)
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise UserError(f"SAM 2 checkpoint {ckpt} not found. " + SAM2_HELP)
        try:
            import torch
            from sam2.build_sam import build_sam2  # type: ignore[import-not-found]
            from sam2.sam2_image_predictor import SAM2ImagePredictor  # type: ignore[import-not-found]
        except ImportError as exc:
            raise UserError(f"cannot import SAM 2 ({exc}). " + SAM2_HELP) from exc
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = build_sam2(cfg.segmenter_config or _guess_sam2_config(ckpt), str(ckpt), device=device)
        self.predictor = SAM2ImagePredictor(model)
        self.proposals = BackgroundSegmenter(cfg)
        self.cfg = cfg

    def fit(self, camera: str, samples: list[np.ndarray]) -> None:
        self.proposals.fit(camera, samples)

    def segment(self, camera: str, rgb: np.ndarray) -> np.ndarray:
        import cv2

        proposal = self.proposals.segment(camera, rgb)
        n, _, stats, _ = cv2.connectedComponentsWithStats(proposal.astype(np.uint8), connectivity=8)
        if n <= 1:
            return proposal
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:]], dtype=np.float32)
        self.predictor.set_image(rgb)
        masks, _, _ = self.predictor.predict(box=boxes, multimask_output=False)
        masks = np.asarray(masks).reshape(len(boxes), -1, *rgb.shape[:2])[:, 0]
        return np.asarray(masks > 0.5).any(axis=0)


def make_segmenter(cfg: MaskConfig) -> Segmenter | None:
    """The segmenter named by ``cfg.method`` (None for 'none'); clear errors for a missing model."""
    if cfg.method == "none":
        return None
    if cfg.method == "background":
        return BackgroundSegmenter(cfg)
    if cfg.method == "sam2":
        return Sam2Segmenter(cfg)
    raise UserError(f"unknown mask method {cfg.method!r}; use background, sam2 or none")


# ---- files, scores, previews --------------------------------------------------------------------------------
def to_mask_image(dynamic: np.ndarray) -> np.ndarray:
    """(H, W) bool dynamic map -> (H, W) uint8 mask file content (255 = static, 0 = dynamic)."""
    return np.where(dynamic, DYNAMIC, STATIC).astype(np.uint8)


def mask_scores(pred_dynamic: np.ndarray, true_dynamic: np.ndarray) -> dict[str, int]:
    """Pixel counts of the dynamic class: tp, fp, fn (sum them over frames before taking ratios)."""
    p, t = pred_dynamic.astype(bool), true_dynamic.astype(bool)
    return {"tp": int((p & t).sum()), "fp": int((p & ~t).sum()), "fn": int((~p & t).sum())}


def iou_precision_recall(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Dynamic-region IoU, precision and recall from pixel counts (1.0 when both sides are empty)."""
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return iou, precision, recall


def contact_sheet(frames: list[np.ndarray], dynamic: list[np.ndarray], path: str | Path, columns: int = 4,
                  tile_width: int = 320) -> Path:
    """PNG grid of frames with the dynamic region tinted red and outlined (what the masks remove from training)."""
    import cv2

    tiles = []
    for rgb, dyn in zip(frames, dynamic):
        img = rgb.astype(np.float32)
        img[dyn] = 0.5 * img[dyn] + 0.5 * np.array([255.0, 0.0, 0.0])
        img = img.astype(np.uint8)
        contours, _ = cv2.findContours(dyn.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, (255, 255, 0), 1)
        h = max(1, round(tile_width * rgb.shape[0] / rgb.shape[1]))
        tiles.append(cv2.resize(img, (tile_width, h), interpolation=cv2.INTER_AREA))
    if not tiles:
        raise UserError("contact sheet needs at least one frame")
    columns = min(columns, len(tiles))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    sheet = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path
