"""The simulated camera: detectors on a focal plane, its optical distortion and the detectors' WCS.

Geometry (all positions in mm on the focal plane, whose origin is the optical axis):

- detector ``d`` maps pixel ``(x, y)`` to ``fp = F_d + R(phi_d) ((x, y) - c) * pixel_size``, with
  ``c`` the detector's centre pixel, ``F_d`` its focal-plane centre and ``phi_d`` its rotation;
- the optics map the focal plane to the sky with a radial cubic distortion
  ``u' = u (1 + k |u|^2)`` (``u`` in pixels from the optical axis), then a linear map of scale
  ``pixel_scale`` rotated by the visit's rotation angle, with east to the left of north
  (parity -1, as a sky image). ``k`` gives `CameraConfig.distortion_at_edge_arcsec` at the field
  edge (the farthest detector corner), capped at 0.5% of the field radius.

Because a radial cubic is a SIP polynomial of order 3 about the optical axis, every detector's
true WCS is *exactly* TAN-SIP (``A_3_0 = A_1_2 = B_2_1 = B_0_3 = k``); the inverse ``AP/BP``
polynomials (order 5) are a least-squares fit given for readers that need them, while
`visitcal.core.wcs.sky_to_pixel` inverts the forward polynomials iteratively.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..core.geom import Box2I
from ..core.image import Detector
from ..core.wcs import make_tan_sip_wcs, pixel_to_sky
from .config import CameraConfig

__all__ = ["SimCamera", "SimDetector", "perturb_wcs"]

SIP_INVERSE_ORDER = 5
MAX_DISTORTION_FRACTION = 0.005


def _rotation(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s], [s, c]])


@dataclasses.dataclass(frozen=True)
class SimDetector:
    """One detector of the simulated camera, with its electronics and defects.

    ``bad_columns`` lists ``(x, y0, y1)``: column ``x`` is dead from row ``y0`` to ``y1`` inclusive.
    ``qe_offset_mag`` is added to the zero point (a detector with +0.01 collects 1% more light).
    """

    detector: Detector
    gain: float
    read_noise: float
    full_well: float
    qe_offset_mag: float
    bad_columns: tuple[tuple[int, int, int], ...]

    @property
    def id(self) -> int:
        """The detector id (0-based, its index in `SimCamera.detectors`)."""
        return self.detector.id

    @property
    def saturation_adu(self) -> float:
        """The full well in ADU, ``full_well / gain``: the level at which a pixel saturates and bleeds."""
        return self.full_well / self.gain

    def to_dict(self) -> dict:
        """A JSON-ready dict: the `Detector`'s own fields plus ``gain`` (e-/ADU), ``read_noise`` (e-),
        ``full_well`` (e-), ``qe_offset_mag`` and ``bad_columns`` (lists ``[x, y0, y1]``)."""
        d = self.detector.to_dict()
        d.update(gain=self.gain, read_noise=self.read_noise, full_well=self.full_well,
                 qe_offset_mag=self.qe_offset_mag, bad_columns=[list(b) for b in self.bad_columns])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimDetector:
        """Inverse of `to_dict` (``d`` is not modified); KeyError when an electronics key is missing."""
        d = dict(d)
        extra = {k: d.pop(k) for k in ("gain", "read_noise", "full_well", "qe_offset_mag", "bad_columns")}
        extra["bad_columns"] = tuple(tuple(int(v) for v in b) for b in extra["bad_columns"])
        return cls(detector=Detector.from_dict(d), **extra)


class SimCamera:
    """Detectors tiled on a focal plane, centred on the optical axis, in rows of ``ceil(sqrt(n))``.

    The layout, rotations, gains and defects depend only on the camera config and ``n_detectors``
    (drawn from ``config.seed``), so a preset is the same camera in every simulation.
    """

    def __init__(self, config: CameraConfig, n_detectors: int):
        if n_detectors < 1:
            raise ValueError(f"n_detectors must be at least 1, got {n_detectors}")
        self.config = config
        rng = np.random.default_rng([config.seed, n_detectors])
        w, h, p = config.detector_width, config.detector_height, config.pixel_size_mm
        ncol = math.ceil(math.sqrt(n_detectors))
        nrow = math.ceil(n_detectors / ncol)
        pitch_x, pitch_y = (w + config.gap_px) * p, (h + config.gap_px) * p
        detectors = []
        for k in range(n_detectors):
            row, col = divmod(k, ncol)
            fx = (col - (ncol - 1) / 2) * pitch_x
            fy = (row - (nrow - 1) / 2) * pitch_y
            rot = float(rng.normal(0.0, config.rotation_sigma_deg))
            det = Detector(id=k, name=f"S{row}{col}", bbox=Box2I(0, 0, w - 1, h - 1),
                           focal_plane_center=(fx, fy), rotation=rot, pixel_size_mm=p)
            gain = config.gain * float(1 + 0.05 * rng.uniform(-1, 1))
            read_noise = config.read_noise * float(1 + 0.1 * rng.uniform(-1, 1))
            qe = float(rng.normal(0.0, config.qe_sigma_mag))
            bad = []
            for _ in range(config.bad_columns_per_detector):
                x = int(rng.integers(config.edge_width + 2, w - config.edge_width - 2))
                if rng.uniform() < 0.5:  # a whole column
                    y0, y1 = 0, h - 1
                else:  # a partial column, from a trap to the readout edge
                    y0, y1 = 0, int(rng.integers(h // 8, h - 1))
                bad.append((x, y0, y1))
            detectors.append(SimDetector(det, gain, read_noise, config.full_well, qe, tuple(sorted(bad))))
        self.detectors: tuple[SimDetector, ...] = tuple(detectors)
        corners = np.array([self.pixel_to_focal_plane(d.id, x, y) for d in detectors
                            for x, y in ((-0.5, -0.5), (w - 0.5, -0.5), (-0.5, h - 0.5), (w - 0.5, h - 0.5))])
        #: Distance of the farthest detector corner from the optical axis, mm.
        self.field_radius_mm = float(np.max(np.hypot(corners[:, 0], corners[:, 1])))
        radius_px = self.field_radius_mm / p
        # At most 0.5% of the field radius, so that a camera of a few small detectors (tests) keeps a
        # gentle, invertible distortion: the small preset with 4 detectors gets 2.9" at its edge.
        edge_px = min(config.distortion_at_edge_arcsec / config.pixel_scale, MAX_DISTORTION_FRACTION * radius_px)
        #: Radial distortion at the field edge, arcsec.
        self.distortion_at_edge_arcsec = edge_px * config.pixel_scale
        #: Radial distortion coefficient, px^-2: ``u' = u (1 + k |u|^2)``.
        self.distortion_k = edge_px / radius_px**3

    # --- geometry -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.detectors)

    def __getitem__(self, detector_id: int) -> SimDetector:
        return self.detectors[detector_id]

    @property
    def field_radius_deg(self) -> float:
        """Distance of the farthest detector corner from the optical axis, degrees (nominal pixel scale)."""
        return self.field_radius_mm / self.config.pixel_size_mm * self.config.pixel_scale / 3600.0

    def _frame(self, detector_id: int):
        det = self.detectors[detector_id].detector
        c = np.array([(det.bbox.min_x + det.bbox.max_x) / 2, (det.bbox.min_y + det.bbox.max_y) / 2])
        return det, c, _rotation(det.rotation), np.array(det.focal_plane_center)

    def pixel_to_focal_plane(self, detector_id: int, x, y):
        """Focal-plane ``(fx, fy)`` in mm of detector pixel positions."""
        det, c, rot, f = self._frame(detector_id)
        d = np.stack([np.asarray(x, float) - c[0], np.asarray(y, float) - c[1]])
        fp = np.tensordot(rot, d, axes=1) * det.pixel_size_mm
        return fp[0] + f[0], fp[1] + f[1]

    def focal_plane_to_pixel(self, detector_id: int, fx, fy):
        """Inverse of `pixel_to_focal_plane`."""
        det, c, rot, f = self._frame(detector_id)
        d = np.stack([np.asarray(fx, float) - f[0], np.asarray(fy, float) - f[1]]) / det.pixel_size_mm
        px = np.tensordot(rot.T, d, axes=1)
        return px[0] + c[0], px[1] + c[1]

    def optical_axis_pixel(self, detector_id: int) -> tuple[float, float]:
        """Where the optical axis (focal-plane origin) falls in the detector's pixel frame."""
        x, y = self.focal_plane_to_pixel(detector_id, 0.0, 0.0)
        return float(x), float(y)

    # --- WCS ----------------------------------------------------------------------------------------
    def cd_matrix(self, detector_id: int, rotation_deg: float) -> np.ndarray:
        """CD (deg/px) of the undistorted map: parity -1 (east left), sky rotation, detector rotation."""
        parity = np.diag([-1.0, 1.0])
        rot = _rotation(rotation_deg) @ _rotation(self.detectors[detector_id].detector.rotation)
        return self.config.pixel_scale / 3600.0 * parity @ rot

    def true_wcs(self, detector_id: int, boresight_ra: float, boresight_dec: float, rotation_deg: float):
        """The exact TAN-SIP WCS of a detector for a pointing (module docstring)."""
        k = self.distortion_k
        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[3, 0] = a[1, 2] = k
        b[2, 1] = b[0, 3] = k
        ap, bp = self._inverse_sip(detector_id, a, b)
        return make_tan_sip_wcs(self.optical_axis_pixel(detector_id), (boresight_ra, boresight_dec),
                                self.cd_matrix(detector_id, rotation_deg), sip_a=a, sip_b=b, sip_ap=ap, sip_bp=bp)

    def _inverse_sip(self, detector_id: int, a, b):
        """Least-squares AP/BP (order `SIP_INVERSE_ORDER`) over the detector, so U + g(U) = u."""
        det = self.detectors[detector_id].detector
        cx, cy = self.optical_axis_pixel(detector_id)
        gx, gy = np.meshgrid(np.linspace(det.bbox.min_x - 0.5, det.bbox.max_x + 0.5, 33),
                             np.linspace(det.bbox.min_y - 0.5, det.bbox.max_y + 0.5, 33))
        u, v = gx.ravel() - cx, gy.ravel() - cy
        fu = sum(a[p, q] * u**p * v**q for p in range(4) for q in range(4) if a[p, q])
        fv = sum(b[p, q] * u**p * v**q for p in range(4) for q in range(4) if b[p, q])
        uu, vv = u + fu, v + fv
        terms = [(p, q) for p in range(SIP_INVERSE_ORDER + 1) for q in range(SIP_INVERSE_ORDER + 1 - p)]
        scale = max(np.max(np.abs(uu)), np.max(np.abs(vv)), 1.0)  # conditioning
        design = np.stack([(uu / scale) ** p * (vv / scale) ** q for p, q in terms], axis=1)
        sol_u = np.linalg.lstsq(design, -fu, rcond=None)[0]
        sol_v = np.linalg.lstsq(design, -fv, rcond=None)[0]
        n = SIP_INVERSE_ORDER + 1
        ap, bp = np.zeros((n, n)), np.zeros((n, n))
        for (p, q), cu, cv in zip(terms, sol_u, sol_v):
            ap[p, q] = cu / scale ** (p + q)
            bp[p, q] = cv / scale ** (p + q)
        return ap, bp

    # --- persistence --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready description of the camera, as written to a repository's ``camera.json``.

        Returns
        -------
        doc : dict
            ``config`` (the `CameraConfig`), ``n_detectors``, ``field_radius_mm``, ``distortion_k_per_px2``
            (the radial distortion coefficient), ``plate_scale_arcsec_per_mm`` and ``detectors`` (each
            `SimDetector.to_dict`).
        """
        return {
            "config": self.config.model_dump(mode="json"),
            "n_detectors": len(self.detectors),
            "field_radius_mm": self.field_radius_mm,
            "distortion_k_per_px2": self.distortion_k,
            "plate_scale_arcsec_per_mm": self.config.pixel_scale / self.config.pixel_size_mm,
            "detectors": [d.to_dict() for d in self.detectors],
        }

    @classmethod
    def from_dict(cls, d: dict) -> SimCamera:
        """Rebuild the camera of a `to_dict` description, from its config and detector count.

        Raises
        ------
        ValueError
            When the stored detectors differ from those the config builds (e.g. written by another version
            of visitcal, whose random draws differ).
        """
        camera = cls(CameraConfig(**d["config"]), int(d["n_detectors"]))
        stored = tuple(SimDetector.from_dict(x) for x in d["detectors"])
        if stored != camera.detectors:
            raise ValueError("camera description does not match the camera its config builds "
                             "(written by another visitcal version?)")
        return camera

    def __repr__(self) -> str:
        c = self.config
        return (f"SimCamera({c.name!r}, {len(self)} detectors of {c.detector_width}x{c.detector_height} px, "
                f"field radius {self.field_radius_deg:.3f} deg)")


def perturb_wcs(wcs, bbox: Box2I, *, shift_arcsec, rotation_rad: float, scale_error: float):
    """A WCS differing from ``wcs`` by a similarity about the centre of ``bbox``.

    The linear part is rotated by ``rotation_rad`` (from east towards north) and scaled by
    ``1 + scale_error``; CRVAL is then moved (three fixed-point iterations) so that the box centre
    lands ``shift_arcsec = (east, north)`` away from where ``wcs`` puts it. SIP terms are kept.
    """
    cx, cy = bbox.center
    ra0, dec0 = (float(v) for v in pixel_to_sky(wcs, cx, cy))
    east, north = (float(v) / 3600.0 for v in shift_arcsec)
    target_dec = dec0 + north
    target_ra = ra0 + east / math.cos(math.radians(target_dec))
    c, s = math.cos(rotation_rad), math.sin(rotation_rad)
    rot = np.array([[c, -s], [s, c]])  # CD maps pixels to intermediate (xi east, eta north)
    new = wcs.deepcopy()
    new.wcs.cd = (1.0 + scale_error) * rot @ wcs.wcs.cd
    new.wcs.set()
    for _ in range(4):
        ra1, dec1 = (float(v) for v in pixel_to_sky(new, cx, cy))
        dra = ((target_ra - ra1 + 180.0) % 360.0) - 180.0
        new.wcs.crval = [new.wcs.crval[0] + dra, new.wcs.crval[1] + (target_dec - dec1)]
        new.wcs.set()
    return new
