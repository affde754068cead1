"""Refit the PSF and the aperture corrections of each detector of a visit on isolated stars, with a reserve
that is the same in every visit (pipe_tasks ``FinalizeCharacterizationTask``,
``FinalizeCharacterizationDetectorTask`` and ``ConsolidateFinalizeCharacterizationDetectorTask``: the
DRP's ``refitPsfModelDetector`` step and its consolidation, which make ``refit_psf_models`` and
``refit_psf_star``).

Per detector (`FinalizeCharacterizationTaskBase.compute_psf_and_ap_corr_map`, after LSST's method of that
name):

1. the footprints of *all* sources of the input catalog, for noise replacement (see "Footprints");
2. the science selector: ``base_GaussianFlux`` S/N strictly between 50 and 1000, no bad pixel flag, no
   centroid or Gaussian-flux flag;
3. the selected rows whose ``id`` is in this visit's isolated-source table (exact integer match, column
   ``id_column``): ``calib_psf_candidate`` True, ``calib_psf_reserved`` the star's reserve flag; the others
   are dropped;
4. PSF candidates (`visitcal.psf.candidates`, 27 px stamps) of the non-reserved stars: reserved stars never
   reach the fitter; ``psf_max_value`` of every row;
5. the PSF fit (``psf_determiner.name``: ``"pixelgrid"``, Piff's model, the default here as LSST's Piff,
   or ``"pca"``), ``calib_psf_used`` on the stars the fit kept; a PSF whose determinant radius at its
   average position is NaN is a failure; not LSST, on a crowded detector (``crowded_field``) the pixel grid's
   per-star S/N cap is ``crowded_psf_max_snr`` (1000) instead of its ``max_snr`` (200);
6. measurement of the candidates with the new PSF at the input catalog's centroid (``slot_Centroid``),
   with every input footprint replaced by noise: ``base_SdssShape`` (adaptive moments of the star and the
   PSF: our stand-in for LSST's HSM source and PSF moments, the same adaptive-moment definition),
   ``base_GaussianFlux``, ``base_PsfFlux``, ``base_FPPosition``;
7. `MeasureApCorrTask` (reference ``slot_CalibFlux``, i.e. the input's normalised compensated-tophat flux;
   stars with ``base_PsfFlux`` S/N > 200, no flag or unresolved cut; not LSST, on a detector that characterisation
   found crowded, ``CROWDED_FIELD`` in the exposure's metadata, after the aperture-excess cut: ``crowded_field``); every entry of the input exposure's
   map that the new map lacks is carried over (``base_CompensatedTophatFlux_12_instFlux`` / ``Err``);
8. `ApplyApCorrTask` on the measured stars.

Failures give the rows LSST's task gives: no selected source or no isolated match -> no row anywhere;
candidate making fails -> an exposure row without PSF and ap-corr map, star rows unmeasured; the PSF fit
fails (too few stars, NaN size, a failed model check, any error) -> the same; measurement or ap-corr
fails -> an exposure row with the PSF but no map. Each detector gets a typed `DetectorStatus` (``status``
column of the ``psf_ap_corr_cat``, and ``detector_status`` of the result): ``"ok"``, a degraded status
(``"degraded"``, `DEGRADED_STATUSES`: e.g. ``psf_order_reduced: ...`` in ``message`` when the PSF had to be fitted
at a lower spatial order than configured) or a failure (`STATUSES`).

Sparse fields (not LSST): an aperture correction fitted at a lower order or from fainter stars
(`MeasureApCorrTask`'s fallbacks) makes the detector ``degraded``, the reason in its message; a detector whose
own aperture correction fails (``ap_corr_failed`` with a PSF) takes the visit-level one
(`apply_visit_level_ap_corr`: a constant per flux on the pooled stars of the visit's detectors), ``degraded``
too. ``refit_psf_star``'s metadata carries ``DEGRADED`` / ``DEGRADED_REASON``.

Sparse fields, the PSF (not LSST): when the selector's S/N cut (50) leaves fewer non-reserved candidates than a
linear PSF needs (3 x the determiner's ``min_stars_per_parameter``), or their PSF fails at every order, the
isolated stars down to S/N ``min_snr_fallback`` (10) are taken and the PSF fitted as a constant (spatial order
0: faint stars do not pin down a spatial variation), ``degraded`` (``psf_faint_stars: ...``). A detector whose
own stars still give no PSF (`PSF_FAILURES`) takes a visit-level one (``do_visit_level_psf``,
`apply_visit_level_psf`): the determiner at spatial order 0 fitted on the non-reserved candidates of all the
visit's detectors, each stamp in its own detector's pixels, checked as any model, then the detector's
measurement and aperture correction as usual; ``degraded`` (``psf_visit_level: a constant PSF from N stars of M
detectors (...; own fit: ...)``). On a u-band visit whose detectors fail their own PSF, the visit-level PSF's
size at each detector's centre was within 0.5% of the truth (13-17 stars of 4 detectors). Both modes (visit
task, detector tasks + consolidation) apply the visit-level PSF, then the visit-level ap corr, the same way.

Footprints
    The ``single_visit_star`` catalog does not carry footprints. They are rebuilt from the calexp: every
    8-connected region of its DETECTED mask plane (the grown detection footprints of the catalog, merged
    where they touch, as afw's top-level footprints) is one top-level footprint; its peaks are the
    positions (rounded) of the catalog's leaf sources (not deblended further, not sky sources) inside
    it, brightest first, which is what the PSF candidates' blend masking needs. A candidate is measured
    from the original pixels of its whole region, so in a deblended blend the neighbour's light stays in
    (LSST inserts the child's heavy footprint); the isolated-star selection makes such candidates rare.
    A candidate whose centroid pixel is not DETECTED gets a disc of radius 3 x (PSF sigma) + 2 px.

Outputs
    ``psf_ap_corr_cat``: an `astropy.table.Table`, one row per detector that got one, sorted by detector:
    ``detector`` (int32, LSST's record id), ``visit`` (int64), ``psf`` and ``ap_corr_map`` (objects:
    the `visitcal.psf.Psf` / `ApCorrMap`, or None), ``status`` and ``message`` (str). It is written
    losslessly to FITS by `write_psf_ap_corr_cat` (one binary-table HDU per component).
    ``output_table``: the measured stars with LSST's ``refit_psf_star`` columns (the input's ``id``,
    ``coord_ra``, ``coord_dec``, ``parent``, centroid, circular-aperture and calibration fluxes; the
    selection flux ``calib_psf_selection_flux(_err)``; ``calib_psf_candidate/reserved/used``; ``visit``
    (int64) and ``detector`` (int32); ``psf_color_*`` and ``psf_max_value``; then the measurement and
    ap-corr columns), one row per candidate of every detector with a row.

Not implemented: Piff's colour term and the FGCM photometry (``psf_color_value`` is NaN, ``psf_color_type``
empty), the sky / alt-az moments (``do_add_sky_moments``), and the measurement plugins visitcal does not
have (CModel, Kron, GAaP, convolved fluxes, HSM regauss and higher-order moments; none is needed for the
PSF or for the aperture corrections of the PSF and Gaussian fluxes): their ap-corr entries are simply
absent.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import _core
from ..core.apcorr import ApCorrMap
from ..measurement.apply_ap_corr import ApplyApCorrConfig, ApplyApCorrTask
from ..core.chebyshev import ChebyshevBoundedField
from ..core.footprint import Footprint, FootprintSet, make_peaks
from ..core.image import Exposure, _to_int32
from ..core.atomic import atomic_write_fits
from ..measurement.measure_ap_corr import PIXEL_BAD_FLAGS
from ..measurement.measure_ap_corr import MeasureApCorrConfig, MeasureApCorrTask
from ..detection.crowding import CrowdedFieldMode, resolve_crowded_field
from ..psf.pca import PcaPsfDeterminer, PcaPsfDeterminerConfig
from ..core.persistence import component_from_table, component_to_table
from ..psf.pixel_grid import PixelGridPsfDeterminer, PixelGridPsfDeterminerConfig
from ..psf.candidates import PsfCandidatesConfig, footprint_index_of, make_psf_candidates
from ..psf.candidates import PsfCandidates
from ..psf.determiner import PsfDeterminerError, PsfFitError, PsfTooFewStarsError, n_spatial_terms
from .reserve_isolated_stars import ReserveIsolatedStarsConfig, ReserveIsolatedStarsTask
from ..measurement.single_frame_measurement import SingleFrameMeasurementConfig, SingleFrameMeasurementTask, SlotsConfig
from ..measurement.source_selector import (
    RequireFlags,
    ScienceSourceSelectorConfig,
    ScienceSourceSelectorTask,
    SignalToNoiseLimit,
    resolve_column,
)

__all__ = [
    "ConsolidateFinalizeCharacterizationDetectorConfig",
    "ConsolidateFinalizeCharacterizationDetectorTask",
    "DEGRADED_STATUSES",
    "DetectorPart",
    "DetectorStatus",
    "FinalizeCharacterizationConfig",
    "FinalizeCharacterizationDetectorTask",
    "FinalizeCharacterizationResult",
    "FinalizeCharacterizationTask",
    "NoWorkFound",
    "PSF_FAILURES",
    "PsfDeterminerChoice",
    "STATUSES",
    "apply_visit_level_ap_corr",
    "apply_visit_level_psf",
    "concat_isolated_star_cats",
    "pool_psf_candidates",
    "read_psf_ap_corr_cat",
    "write_psf_ap_corr_cat",
]

log = logging.getLogger(__name__)

#: Per-detector outcomes. The first two leave the detector out of both outputs, as in LSST. ``degraded`` (not
#: LSST): a PSF and an ap-corr map through a documented fallback (a PSF of a lower spatial order than
#: configured, ``psf_order_reduced: ...`` in the message; an ap corr of lower order or from fainter stars, or the
#: visit-level ap corr), the reasons in the message; usable, like ``ok``. ``psf_too_few_stars``: too few stars
#: even for a constant PSF; ``psf_check_failed``: the model failed a check of `visitcal.psf.checks` at every
#: order tried (the message names the check); ``psf_fit_failed``: any other error of the fit.
STATUSES = ("ok", "degraded", "no_selected_sources", "no_isolated_matches", "candidates_failed",
            "psf_too_few_stars", "psf_check_failed", "psf_fit_failed", "psf_nan_size", "measurement_failed",
            "ap_corr_failed")

#: Statuses of a detector that got its PSF and ap-corr map through a fallback.
DEGRADED_STATUSES = ("degraded",)

#: The flags the PSF-star selector vetoes (LSST FinalizeCharacterizationConfigBase.setDefaults).
SELECTOR_BAD_FLAGS = PIXEL_BAD_FLAGS + ("slot_Centroid_flag", "base_GaussianFlux_flag")

#: The measurement run on the PSF stars: LSST's list for this task, restricted to what visitcal has
#: (base_SdssShape stands in for the HSM source and PSF moments).
FINALIZE_PLUGINS = ("base_SdssShape", "base_GaussianFlux", "base_PsfFlux", "base_FPPosition")


class NoWorkFound(RuntimeError):
    """Nothing to do for this quantum (LSST ``pipe.base.NoWorkFound``): no isolated star in the visit,
    no detector with a star table, or no input to consolidate."""


def _default_source_selector() -> ScienceSourceSelectorConfig:
    return ScienceSourceSelectorConfig(
        do_flags=True, do_signal_to_noise=True, do_unresolved=False, do_isolated=False,
        flags=RequireFlags(bad=SELECTOR_BAD_FLAGS),
        signal_to_noise=SignalToNoiseLimit(flux_field="base_GaussianFlux_instFlux",
                                           err_field="base_GaussianFlux_instFluxErr", minimum=50.0, maximum=1000.0))


def _default_measure_ap_corr() -> MeasureApCorrConfig:
    # few_star_constant off: a detector left with one star takes the visit-level constant fitted on the stars of
    # the visit's detectors (`apply_visit_level_ap_corr`), better than its one star's ratio.
    return MeasureApCorrConfig(few_star_constant=False, source_selector=ScienceSourceSelectorConfig(
        do_flags=False, do_unresolved=False, do_signal_to_noise=True,
        signal_to_noise=SignalToNoiseLimit(flux_field="base_PsfFlux_instFlux", err_field="base_PsfFlux_instFluxErr",
                                           minimum=200.0)))


def _default_measurement() -> SingleFrameMeasurementConfig:
    # Centroid, ApFlux and CalibFlux slots stay the input catalog's (LSST sets them to None here).
    return SingleFrameMeasurementConfig(
        plugins=FINALIZE_PLUGINS,
        slots=SlotsConfig(centroid=None, shape="base_SdssShape", psf_shape="base_SdssShape_psf",
                          psf_flux="base_PsfFlux", ap_flux=None, calib_flux=None, gaussian_flux="base_GaussianFlux",
                          model_flux=None))


class PsfDeterminerChoice(BaseModel):
    """The PSF determiner registry field: ``name`` picks one, each has its config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["pixelgrid", "pca"] = Field("pixelgrid", description="'pixelgrid' (Piff's PixelGrid + "
                                              "BasisPolynomial, LSST's default 'piff') or 'pca'.")
    pixelgrid: PixelGridPsfDeterminerConfig = Field(default_factory=PixelGridPsfDeterminerConfig,
                                                    description="Config of the 'pixelgrid' determiner.")
    pca: PcaPsfDeterminerConfig = Field(default_factory=PcaPsfDeterminerConfig,
                                        description="Config of the 'pca' determiner.")

    def make(self):
        """A new determiner of the chosen kind (`PixelGridPsfDeterminer` or `PcaPsfDeterminer`) and config."""
        return PixelGridPsfDeterminer(self.pixelgrid) if self.name == "pixelgrid" else PcaPsfDeterminer(self.pca)


class FinalizeCharacterizationConfig(BaseModel):
    """Configuration of the finalize tasks (LSST ``FinalizeCharacterizationConfigBase`` in snake_case, with
    its ``setDefaults``: S/N 50-1000 on ``base_GaussianFlux``, 10% reserve, 27-px candidate stamps,
    ap-corr stars with ``base_PsfFlux`` S/N > 200)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_selector: ScienceSourceSelectorConfig = Field(
        default_factory=_default_source_selector,
        description="PSF-star selection: base_GaussianFlux S/N in (50, 1000), bad flags vetoed.")
    id_column: str = Field("sourceId", description="Source-id column of the isolated-source tables.")
    reserve_selection: ReserveIsolatedStarsConfig = Field(default_factory=ReserveIsolatedStarsConfig,
                                                          description="Which isolated stars are reserved.")
    make_psf_candidates: PsfCandidatesConfig = Field(default_factory=PsfCandidatesConfig,
                                                     description="PSF candidate stamps (kernelSize 27, border 0; "
                                                                 "the determiners' 300-star cap).")
    psf_determiner: PsfDeterminerChoice = Field(default_factory=PsfDeterminerChoice, description="PSF determiner.")
    measurement: SingleFrameMeasurementConfig = Field(default_factory=_default_measurement,
                                                      description="Measurement of the PSF stars.")
    measure_ap_corr: MeasureApCorrConfig = Field(default_factory=_default_measure_ap_corr,
                                                 description="Aperture corrections (base_PsfFlux S/N > 200).")
    apply_ap_corr: ApplyApCorrConfig = Field(default_factory=ApplyApCorrConfig, description="Applying them.")
    crowded_field: CrowdedFieldMode = Field(
        "auto", description="Not LSST: crowded-field mode (`visitcal.detection.crowding`). 'auto': the "
        "characterisation's decision, read from the input exposure's metadata (CROWDED_FIELD; not crowded without "
        "it); 'on' / 'off': forced ('off' is LSST's behaviour). On a crowded detector the aperture corrections' "
        "stars pass the aperture-excess cut (measure_ap_corr.aperture_excess.do_cut), and the pixel-grid PSF's "
        "per-star S/N cap is crowded_psf_max_snr.")
    crowded_psf_max_snr: float | None = Field(
        1000.0, gt=0, le=1e6, description="Not LSST: the pixel-grid PSF's per-star S/N cap (max_snr; LSST's maxSNR "
        "200) on a crowded detector; None keeps the determiner's. In a crowd the faint PSF stars carry their "
        "neighbours' unmasked wings, a larger fraction of their light than of a bright star's; at LSST's cap they "
        "weigh as much as the bright ones and the PSF came out 1.1e-3 too large (150 000 stars/deg^2, "
        "bench/README.md).")
    do_faint_psf_fallback: bool = Field(True, description="Not LSST: when the selector's S/N cut leaves fewer "
                                        "non-reserved PSF candidates than a linear PSF needs (3 x the determiner's "
                                        "min_stars_per_parameter; 1 x for a configured order 0), or their PSF fails "
                                        "at every order, select again down to S/N min_snr_fallback; the detector is "
                                        "then degraded ('psf_faint_stars: ...').")
    min_snr_fallback: float = Field(10.0, ge=5.0, le=1000.0, description="The fainter-star fallback's lower S/N "
                                    "limit (on the selector's flux): the isolated-star association keeps sources "
                                    "above S/N 8, so fainter ones could not be matched anyway.")
    do_visit_level_psf: bool = Field(True, description="Not LSST: a detector whose own stars give no PSF (too few "
                                     "stars, or a model failing its checks, even with fainter stars) takes one "
                                     "fitted on the PSF candidates of all the visit's detectors, each star in its own "
                                     "detector's pixels, at spatial order 0 (a constant over the detector), checked "
                                     "as any PSF; the detector is degraded ('psf_visit_level: ...'). LSST fails it.")
    do_add_sky_moments: bool = Field(
        False, description="LSST's do_add_sky_moments (the PSF stars' moments in sky / alt-az coordinates): accepted "
                           "so that LSST configurations load; True is refused (not implemented).")
    do_add_fgcm_photometry: bool = Field(
        False, description="LSST's do_add_fgcm_photometry (FGCM photometry of the PSF stars for Piff's colour "
                           "term): accepted so that LSST configurations load; True is refused (no FGCM).")
    fgcm_photometry_bands: list[str] = Field(
        default_factory=lambda: ["g", "r", "i", "z", "y"], max_length=20,
        description="LSST's fgcmPhotometryBands: the bands of do_add_fgcm_photometry (unused while it is False).")
    do_visit_level_ap_corr: bool = Field(True, description="Not LSST: a detector whose aperture correction could "
                                         "not be measured from its own stars (``ap_corr_failed`` with a PSF) takes a "
                                         "constant per flux fitted on the stars of all the visit's detectors, and is "
                                         "degraded (`apply_visit_level_ap_corr`). LSST leaves it without a map, "
                                         "and reprocessing fails it.")


    @model_validator(mode="after")
    def _refuse_unimplemented(self):
        for field, lsst in (("do_add_sky_moments", "doAddSkyMoments (do_add_sky_moments)"),
                            ("do_add_fgcm_photometry", "doAddFgcmPhotometry (do_add_fgcm_photometry)")):
            if getattr(self, field):
                raise ValueError(f"{field}: LSST's {lsst} is not implemented by visitcal; set it False")
        return self

    @classmethod
    def preset(cls, name: str) -> "FinalizeCharacterizationConfig":
        """A named configuration: ``"lsst"`` (the defaults) or ``"lsstcam"``, obs_lsst's LSSTCam overrides
        (lsst-spec.md): the pixel-grid PSF at spatial order 4 in g, r, i, z, y and 2 in u
        (``spatialOrderPerBand``, DM-53160), stars' centres not refitted (``piffPixelGridFitCenter = False``),
        no sky moments, no FGCM photometry. (Its ``zerothOrderInterpNotEnoughStars = False`` and
        ``piffBasisPolynomialSolver = "cpp"`` have no visitcal counterpart: our order step-down and Eigen solver
        are always used.)"""
        if name == "lsst":
            return cls()
        if name != "lsstcam":
            raise ValueError(f"unknown preset {name!r}: 'lsst' or 'lsstcam'")
        base = cls()
        pd = base.psf_determiner
        grid = pd.pixelgrid.model_copy(update={
            "spatial_order_per_band": {"u": 2, "g": 4, "r": 4, "i": 4, "z": 4, "y": 4}, "fit_center": False})
        return base.model_copy(update={"psf_determiner": pd.model_copy(update={"pixelgrid": grid})})


@dataclasses.dataclass
class DetectorStatus:
    """What became of one detector.

    Attributes
    ----------
    detector : int
    status : str
        One of `STATUSES`.
    message : str
        The error's text for a failure, the fallbacks' reasons when degraded ("" when ok).
    error_type : str
        The exception's class name ("" when ok or not an exception).
    n_selected, n_matched, n_reserved, n_candidates, n_used : int
        Selector output, isolated matches (the star-table rows), reserved among them, PSF candidates
        fitted, stars the fit kept.
    timings : dict
        Seconds per stage: ``selection``, ``candidates``, ``psf``, ``measurement``, ``ap_corr``.
    psf_spatial_order : int
        Spatial order of the fitted PSF (-1: none fitted).
    degraded_reason : str
        Why a fallback was used (e.g. ``"psf_order_reduced: ..."``), kept even when a later stage failed
        ("" when none was).
    """

    detector: int
    status: str = "ok"
    message: str = ""
    error_type: str = ""
    n_selected: int = 0
    n_matched: int = 0
    n_reserved: int = 0
    n_candidates: int = 0
    n_used: int = 0
    timings: dict = dataclasses.field(default_factory=dict)
    psf_spatial_order: int = -1
    degraded_reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether the detector got both a PSF and an ap-corr map (``"ok"`` or a degraded status)."""
        return self.status == "ok" or self.status in DEGRADED_STATUSES

    @property
    def degraded(self) -> bool:
        """Whether they come from a documented fallback (`DEGRADED_STATUSES`, the reasons in ``message``)."""
        return self.status in DEGRADED_STATUSES

    @property
    def has_row(self) -> bool:
        """Whether the detector gets rows in the outputs: False only when no source was selected or none
        matched an isolated star, as in LSST."""
        return self.status not in ("no_selected_sources", "no_isolated_matches")


@dataclasses.dataclass
class FinalizeCharacterizationResult:
    """``psf_ap_corr_cat`` and ``output_table`` (see the module docstring); ``detector_status`` maps every
    processed detector to its `DetectorStatus`."""

    psf_ap_corr_cat: Table
    output_table: Table
    detector_status: dict = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------
# Isolated stars
# --------------------------------------------------------------------------------------------------------

def concat_isolated_star_cats(band: str, isolated_star_cat_dict: Mapping, isolated_star_source_dict: Mapping, *,
                              visit: int, detector: int | None = None,
                              reserve_selection: ReserveIsolatedStarsTask | None = None,
                              id_column: str = "sourceId") -> Table:
    """One table of this visit's (and detector's) isolated-star sources with their reserve flags (LSST's
    ``concat_isolated_star_cats``).

    Per tract, in sorted order: the sources of this visit (and detector) are kept, the stars are cut to those
    with ``nsource_<band> > 0``, the reserve flags are drawn over that cut star list by
    ``reserve_selection`` seeded from the name ``reserved_<band>_<tract>`` (so a star has the same flag in
    every visit), and each source takes its
    star's flag; the tracts are then concatenated.

    Parameters
    ----------
    band : str
    isolated_star_cat_dict, isolated_star_source_dict : mapping tract -> table
        The star tables (``nsource_<band>`` needed) and source tables (``id_column``, ``obj_index``,
        ``visit`` and, with ``detector``, ``detector``) of each tract, as made by
        `IsolatedStarAssociationTask`.
    visit : int
    detector : int, optional
    reserve_selection : `ReserveIsolatedStarsTask`, optional
        Default: 10% reserved.
    id_column : str

    Returns
    -------
    astropy.table.Table
        ``id_column`` (int64), ``obj_index`` (int64; the star's row among all kept stars of all tracts),
        ``visit``, (``detector``), ``tract`` (int64) and ``reserved`` (bool). Empty when nothing matched.
    """
    reserve = reserve_selection or ReserveIsolatedStarsTask()
    if set(isolated_star_cat_dict) != set(isolated_star_source_dict):
        raise ValueError(f"isolated_star_cat_dict has tracts {sorted(isolated_star_cat_dict)} but "
                         f"isolated_star_source_dict has {sorted(isolated_star_source_dict)}")
    columns = [id_column, "obj_index", "visit"] + (["detector"] if detector is not None else [])
    pieces = []
    offset = 0
    for tract in sorted(isolated_star_cat_dict):
        stars = isolated_star_cat_dict[tract]
        sources = isolated_star_source_dict[tract]
        for col in columns:
            if col not in sources.colnames:
                raise KeyError(f"isolated-star source table of tract {tract} has no column {col!r}")
        keep = np.asarray(sources["visit"]) == visit
        if detector is not None:
            keep &= np.asarray(sources["detector"]) == detector
        if not keep.any():
            continue
        nsource_col = f"nsource_{band}"
        if nsource_col not in stars.colnames:
            continue  # no star of this tract was ever seen in this band
        use_band = np.flatnonzero(np.asarray(stars[nsource_col]) > 0)
        if use_band.size == 0:
            continue
        new_index = np.full(len(stars), -1, dtype=np.int64)
        new_index[use_band] = np.arange(use_band.size)
        obj_index = np.asarray(sources["obj_index"], dtype=np.int64)[keep]
        if obj_index.size and (obj_index.min() < 0 or obj_index.max() >= len(stars)):
            raise ValueError(f"isolated-star source table of tract {tract}: obj_index outside the star table")
        obj_index = new_index[obj_index]
        in_band = obj_index >= 0
        if not in_band.any():
            continue
        reserved = reserve.run(use_band.size, extra=f"{band}_{tract}")
        piece = Table()
        piece[id_column] = np.asarray(sources[id_column], dtype=np.int64)[keep][in_band]
        piece["obj_index"] = obj_index[in_band] + offset
        piece["visit"] = np.asarray(sources["visit"], dtype=np.int64)[keep][in_band]
        if detector is not None:
            piece["detector"] = np.asarray(sources["detector"], dtype=np.int32)[keep][in_band]
        piece["tract"] = np.full(int(in_band.sum()), int(tract), dtype=np.int64)
        piece["reserved"] = reserved[obj_index[in_band]]
        pieces.append(piece)
        offset += use_band.size
    if not pieces:
        out = Table({id_column: np.zeros(0, np.int64), "obj_index": np.zeros(0, np.int64),
                     "visit": np.zeros(0, np.int64)})
        if detector is not None:
            out["detector"] = np.zeros(0, np.int32)
        out["tract"] = np.zeros(0, np.int64)
        out["reserved"] = np.zeros(0, bool)
        return out
    return vstack(pieces, join_type="exact")


# --------------------------------------------------------------------------------------------------------
# Footprints rebuilt from the calexp's DETECTED plane
# --------------------------------------------------------------------------------------------------------

def footprints_from_detected(exposure: Exposure, src: Table) -> tuple[FootprintSet, np.ndarray]:
    """The top-level footprints of ``src`` rebuilt from ``exposure``'s DETECTED plane (module docstring).

    Returns
    -------
    footprints : `FootprintSet`
        One per 8-connected DETECTED region, with the leaf sources' peaks (brightest first).
    index : (len(src),) int64
        The footprint holding each source's centroid pixel, -1 for none.
    """
    mi = exposure.masked_image
    # the regions straight from the mask's bits (C++), without boolean and float copies of the plane (146 MB)
    bit = _to_int32(exposure.mask.get_plane_bitmask("DETECTED"))
    raw = _core.find_mask_footprints(np.ascontiguousarray(exposure.mask.array), int(bit))
    regions = FootprintSet._from_core(raw, exposure.bbox, shift=tuple(mi.xy0))
    x = np.asarray(src[resolve_column(src, "slot_Centroid_x")], dtype=np.float64)
    y = np.asarray(src[resolve_column(src, "slot_Centroid_y")], dtype=np.float64)
    index = footprint_index_of(regions, x, y)
    leaf = index >= 0
    if "deblend_nChild" in src.colnames:
        leaf &= np.asarray(src["deblend_nChild"]) == 0
    if "sky_source" in src.colnames:
        leaf &= ~np.asarray(src["sky_source"], dtype=bool)
    rows = np.flatnonzero(leaf)
    flux = np.asarray(src[resolve_column(src, "slot_PsfFlux_instFlux")], dtype=np.float64)[rows] \
        if _has(src, "slot_PsfFlux_instFlux") else np.zeros(rows.size)
    flux = np.where(np.isfinite(flux), flux, -np.inf)
    order = np.lexsort((rows, -flux, index[rows]))  # by footprint, then brightest first, then row
    rows, flux = rows[order], flux[order]
    xy = np.stack([np.floor(x[rows] + 0.5), np.floor(y[rows] + 0.5)], axis=1).astype(np.int32)
    peaks = make_peaks(xy, np.where(np.isfinite(flux), flux, 0.0), np.zeros(rows.size),
                       ids=np.asarray(src["id"], dtype=np.int64)[rows])
    counts = np.bincount(index[rows], minlength=len(regions))
    peak_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    fs = FootprintSet(regions.spans, regions.span_offsets, peaks, peak_offsets, exposure.bbox)
    return fs, index


def _has(table: Table, name: str) -> bool:
    try:
        resolve_column(table, name)
    except KeyError:
        return False
    return True


def _disc(x: float, y: float, radius: float) -> Footprint:
    cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
    r = int(math.ceil(radius))
    dy = np.arange(-r, r + 1)
    half = np.floor(np.sqrt(np.maximum(radius * radius - dy * dy, 0.0))).astype(np.int64)
    spans = np.stack([cy + dy, cx - half, cx + half], axis=1)
    return Footprint(spans)


# --------------------------------------------------------------------------------------------------------
# Lossless persistence of the per-visit model catalog
# --------------------------------------------------------------------------------------------------------

def write_psf_ap_corr_cat(catalog: Table, path, *, overwrite: bool = False) -> Path:
    """Write a ``psf_ap_corr_cat`` to FITS, losslessly.

    HDU 1 ``INDEX``: ``detector``, ``visit``, ``status``, ``message``, ``psf_hdu`` and ``ap_corr_hdu`` (the
    HDU number of each component, -1 for None); then one binary-table HDU per component, written by
    `visitcal.core.persistence.component_to_table` (float64 coefficients, so values read back are identical).
    """
    index = Table()
    index["detector"] = np.asarray(catalog["detector"], dtype=np.int32)
    index["visit"] = np.asarray(catalog["visit"], dtype=np.int64)
    index["status"] = np.asarray(catalog["status"], dtype=str)
    index["message"] = np.asarray([str(m) for m in catalog["message"]], dtype=str) if len(catalog) else \
        np.zeros(0, dtype="U1")
    hdus = [fits.PrimaryHDU()]
    psf_hdu = np.full(len(catalog), -1, np.int32)
    apc_hdu = np.full(len(catalog), -1, np.int32)
    components = []
    next_hdu = 2
    for k, row in enumerate(catalog):
        for obj, where, kind in ((row["psf"], psf_hdu, "PSF"), (row["ap_corr_map"], apc_hdu, "APCORR")):
            if obj is None:
                continue
            hdu = fits.table_to_hdu(component_to_table(obj))
            hdu.name = f"{kind}_{int(row['detector'])}"
            components.append(hdu)
            where[k] = next_hdu
            next_hdu += 1
    index["psf_hdu"] = psf_hdu
    index["ap_corr_hdu"] = apc_hdu
    index_hdu = fits.table_to_hdu(index)
    index_hdu.name = "INDEX"
    hdus.append(index_hdu)
    hdus.extend(components)
    atomic_write_fits(fits.HDUList(hdus), path, overwrite=overwrite)
    return Path(path)


def read_psf_ap_corr_cat(path) -> Table:
    """Read a file written by `write_psf_ap_corr_cat` back into a ``psf_ap_corr_cat`` table."""
    path = Path(path)
    with fits.open(path) as hdul:
        if "INDEX" not in hdul:
            raise ValueError(f"{path}: no INDEX HDU; not a psf_ap_corr_cat file")
        index = Table.read(hdul["INDEX"])
        psfs, maps = [], []
        for row in index:
            for k, out in ((int(row["psf_hdu"]), psfs), (int(row["ap_corr_hdu"]), maps)):
                if k < 0:
                    out.append(None)
                    continue
                table = Table.read(hdul[k])
                out.append(component_from_table(table, where=f"{path}[{k}]"))
    return _make_psf_ap_corr_cat(index["detector"], index["visit"], psfs, maps,
                                 [str(s) for s in index["status"]], [str(m) for m in index["message"]])


def _make_psf_ap_corr_cat(detectors, visits, psfs, maps, statuses, messages) -> Table:
    n = len(detectors)
    cat = Table()
    cat["detector"] = np.asarray(detectors, dtype=np.int32).reshape(n)
    cat["visit"] = np.asarray(visits, dtype=np.int64).reshape(n)
    psf_col = np.empty(n, dtype=object)
    map_col = np.empty(n, dtype=object)
    for k in range(n):
        psf_col[k], map_col[k] = psfs[k], maps[k]
    cat["psf"] = psf_col
    cat["ap_corr_map"] = map_col
    cat["status"] = np.asarray(statuses, dtype=str).reshape(n) if n else np.zeros(0, dtype="U1")
    cat["message"] = np.asarray(messages, dtype=str).reshape(n) if n else np.zeros(0, dtype="U1")
    return cat


# --------------------------------------------------------------------------------------------------------
# The tasks
# --------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _DetectorOutput:
    psf: object
    ap_corr_map: ApCorrMap | None
    measured: Table | None
    status: DetectorStatus


@dataclasses.dataclass
class _Selection:
    """One detector's selected isolated stars and the candidate stamps of the non-reserved ones (or the
    failure, ``(status, error)``, that ends the detector)."""

    n_selected: int = 0
    selected: Table | None = None
    sel_index: np.ndarray | None = None
    cx: np.ndarray | None = None
    cy: np.ndarray | None = None
    candidates: object = None
    cand_rows: np.ndarray | None = None
    failure: tuple | None = None


class FinalizeCharacterizationTaskBase:
    """What the visit and detector tasks share: the subtasks and the per-detector work."""

    ConfigClass = FinalizeCharacterizationConfig

    def __init__(self, config: FinalizeCharacterizationConfig | None = None):
        self.config = config if config is not None else FinalizeCharacterizationConfig()
        c = self.config
        self.source_selector = ScienceSourceSelectorTask(c.source_selector)
        # the fainter-star fallback: the same selector with its S/N floor lowered to min_snr_fallback
        self.faint_source_selector = ScienceSourceSelectorTask(c.source_selector.model_copy(update={
            "signal_to_noise": c.source_selector.signal_to_noise.model_copy(update={
                "minimum": min(c.min_snr_fallback, c.source_selector.signal_to_noise.minimum or c.min_snr_fallback)})}))
        self.reserve_selection = ReserveIsolatedStarsTask(c.reserve_selection)
        self.psf_determiner = c.psf_determiner.make()
        self._crowded_psf_choice = _crowded_choice(c.psf_determiner, c.crowded_psf_max_snr)
        self.crowded_psf_determiner = self._crowded_psf_choice.make()
        self.measurement = SingleFrameMeasurementTask(c.measurement)
        self.measure_ap_corr = MeasureApCorrTask(c.measure_ap_corr)
        # a crowded detector's (crowded_field): the same with the aperture-excess cut
        self.crowded_measure_ap_corr = MeasureApCorrTask(c.measure_ap_corr.model_copy(update={
            "aperture_excess": c.measure_ap_corr.aperture_excess.model_copy(update={"do_cut": True})}))
        self.apply_ap_corr = ApplyApCorrTask(c.apply_ap_corr)
        self._template_key = None
        self._template: Table | None = None

    # --- the output schema (LSST's _make_output_schema_mapper) ----------------------------------
    @staticmethod
    def _mapped_columns(src: Table) -> list[str]:
        """Input columns copied into the output, in LSST's order: id, coordinates and parent, centroid,
        circular-aperture fluxes, ap and calib fluxes."""
        names = ["id", "coord_ra", "coord_dec", "parent"]
        for suffix in ("x", "y"):
            names.append(resolve_column(src, f"slot_Centroid_{suffix}"))
        names += [c for c in src.colnames if c.startswith("base_CircularApertureFlux_")]
        for slot in ("ApFlux", "CalibFlux"):
            for suffix in ("instFlux", "instFluxErr", "flag"):
                try:
                    names.append(resolve_column(src, f"slot_{slot}_{suffix}"))
                except KeyError:
                    pass
        seen, out = set(), []
        for name in names:
            if name not in seen:
                if name not in src.colnames:
                    raise KeyError(f"src has no column {name!r}, needed in the finalized star table")
                seen.add(name)
                out.append(name)
        return out

    def _map_to_output(self, selected: Table) -> Table:
        out = Table()
        for name in self._mapped_columns(selected):
            out[name] = selected[name]
        out["calib_psf_selection_flux"] = np.asarray(selected["base_GaussianFlux_instFlux"], dtype=np.float64)
        out["calib_psf_selection_flux_err"] = np.asarray(selected["base_GaussianFlux_instFluxErr"], dtype=np.float64)
        for name in ("calib_psf_candidate", "calib_psf_reserved", "calib_psf_used"):
            out[name] = np.asarray(selected[name], dtype=bool)
        n = len(selected)
        out["visit"] = np.zeros(n, np.int64)
        out["detector"] = np.zeros(n, np.int32)
        out["psf_color_value"] = np.asarray(selected["psf_color_value"], dtype=np.float32)
        out["psf_color_type"] = np.asarray(selected["psf_color_type"], dtype="U10")
        out["psf_max_value"] = np.asarray(selected["psf_max_value"], dtype=np.float32)
        slots = dict(selected.meta.get("slots", {}))
        out.meta["slots"] = {k: v for k, v in slots.items() if k in ("Centroid", "ApFlux", "CalibFlux")}
        return out

    def _set_slots(self, table: Table, input_slots: dict) -> None:
        slots = {k: v for k, v in input_slots.items() if k in ("Centroid", "ApFlux", "CalibFlux")}
        slots.update(self.config.measurement.slots.as_meta())
        table.meta["slots"] = slots

    def _output_template(self, src: Table, exposure: Exposure) -> Table:
        """A zero-row table with every output column, in order (built once per input schema)."""
        key = (tuple(src.colnames), tuple(sorted(src.meta.get("slots", {}).items())))
        if self._template_key == key:
            return self._template
        empty = src[:0].copy()
        empty["psf_color_value"] = np.zeros(0, np.float32)
        empty["psf_color_type"] = np.zeros(0, "U10")
        empty["psf_max_value"] = np.zeros(0, np.float32)
        for name in ("calib_psf_candidate", "calib_psf_reserved", "calib_psf_used"):
            empty[name] = np.zeros(0, bool)
        t = self._map_to_output(empty)
        input_slots = dict(src.meta.get("slots", {}))
        exp = copy.copy(exposure)
        if exp.psf is None:
            from ..psf.models import GaussianPsf
            exp.psf = GaussianPsf(2.0)
        self.measurement.run(t, exp, [], centroids=(np.zeros(0), np.zeros(0)), noise_footprints=[],
                             noise_index=np.zeros(0, np.int64))
        self._set_slots(t, input_slots)
        for name in self.measure_ap_corr.names_in(t):
            t[f"apcorr_{name}_used"] = np.zeros(0, bool)
        t[f"apcorr_{self.config.measure_ap_corr.ref_flux_name}_used"] = np.zeros(0, bool)
        unit = ChebyshevBoundedField(exposure.bbox, np.array([[1.0]]))
        names = self.apply_ap_corr.names_in(t)
        self.apply_ap_corr.run(t, ApCorrMap({f"{n}_{s}": unit for n in names for s in ("instFlux", "instFluxErr")}))
        self._template_key, self._template = key, t
        return t

    @staticmethod
    def _conform(table: Table, template: Table) -> Table:
        """``table`` with exactly the template's columns, in its order; missing ones NaN / False / 0."""
        out = Table(meta=copy.deepcopy(template.meta))
        n = len(table)
        for name in template.colnames:
            col = template[name]
            if name in table.colnames:
                out[name] = np.asarray(table[name]).astype(col.dtype, copy=False)
            elif col.dtype.kind == "f":
                out[name] = np.full(n, np.nan, dtype=col.dtype)
            elif col.dtype.kind == "b":
                out[name] = np.zeros(n, dtype=bool)
            else:
                out[name] = np.zeros(n, dtype=col.dtype)
            if col.unit is not None:
                out[name].unit = col.unit
        return out

    # --- one detector (LSST's compute_psf_and_ap_corr_map) ---------------------------------------
    def _configured_order(self, band: str | None) -> int:
        """The determiner's configured spatial order (for ``band``)."""
        det = self.config.psf_determiner
        cfg = det.pixelgrid if det.name == "pixelgrid" else det.pca
        order = int(cfg.spatial_order)
        if det.name == "pixelgrid" and band:
            order = int(cfg.spatial_order_per_band.get(band, order))
        return order

    def _faint_fallback_threshold(self, band: str | None) -> int:
        """Non-reserved candidates below which the fainter-star fallback is tried: what a linear (order-1) PSF
        needs at the determiner's ``min_stars_per_parameter``, or 1 x that for a configured order 0."""
        det = self.config.psf_determiner
        cfg = det.pixelgrid if det.name == "pixelgrid" else det.pca
        return max(1, math.ceil(cfg.min_stars_per_parameter * n_spatial_terms(min(self._configured_order(band), 1))))

    def _select_psf_stars(self, exposure: Exposure, src: Table, isolated_source_table: Table, footprints, fp_index,
                          selector) -> "_Selection":
        """Steps 2-7 of the module docstring with ``selector``: the selected isolated stars and the candidate
        stamps of the non-reserved ones, or the failure (``kind``, error) that ends the detector."""
        c = self.config
        good = selector.run(src)
        n_selected = int(good.sum())
        if not good.any():
            return _Selection(n_selected=0, failure=("no_selected_sources", None))
        rows = np.flatnonzero(good)
        # 4. exact id match to the isolated sources
        iso_ids = np.asarray(isolated_source_table[c.id_column], dtype=np.int64)
        iso_reserved = np.asarray(isolated_source_table["reserved"], dtype=bool)
        order = np.argsort(iso_ids, kind="stable")
        sorted_ids = iso_ids[order]
        ids = np.asarray(src["id"], dtype=np.int64)[rows]
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
        matched = (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(ids.size, bool)
        if not matched.any():
            return _Selection(n_selected=n_selected, failure=("no_isolated_matches", RuntimeError(
                "no selected source is an isolated star (probably an earlier astrometry failure)")))
        rows = rows[matched]
        # 3. the selected rows with the extra columns, candidate / reserved flags set
        selected = src[rows]
        n = len(selected)
        selected["psf_color_value"] = np.full(n, np.nan, np.float32)
        selected["psf_color_type"] = np.full(n, "", dtype="U10")
        selected["psf_max_value"] = np.full(n, np.nan, np.float32)
        selected["calib_psf_candidate"] = np.ones(n, bool)
        selected["calib_psf_reserved"] = iso_reserved[order[pos[matched]]]
        selected["calib_psf_used"] = np.zeros(n, bool)
        sel_index = fp_index[rows]
        # 7. candidates: psf_max_value of every row; stamps of the non-reserved ones for the fit
        cand_cfg = c.make_psf_candidates
        name = cand_cfg.centroid_name
        cx = np.asarray(selected[resolve_column(selected, "slot_Centroid_x")], dtype=np.float64)
        cy = np.asarray(selected[resolve_column(selected, "slot_Centroid_y")], dtype=np.float64)
        reserved = np.asarray(selected["calib_psf_reserved"], dtype=bool)
        out = _Selection(n_selected=n_selected, selected=selected, sel_index=sel_index, cx=cx, cy=cy)
        try:
            every = make_psf_candidates(exposure, {name + "_x": cx, name + "_y": cy}, footprints,
                                        cand_cfg.model_copy(update={"max_candidates": n}), footprint_index=sel_index)
            selected["psf_max_value"] = np.asarray(every.table["psf_max_value"], dtype=np.float32)
            fit_rows = np.flatnonzero(~reserved)
            candidates = make_psf_candidates(exposure, {name + "_x": cx[fit_rows], name + "_y": cy[fit_rows]},
                                             footprints, cand_cfg, footprint_index=sel_index[fit_rows])
        except Exception as err:  # noqa: BLE001 - LSST's semantics: any failure here -> unmeasured rows
            out.failure = ("candidates_failed", err)
            return out
        out.candidates = candidates
        out.cand_rows = fit_rows[np.asarray(candidates.table["used"], bool)]
        return out

    def _fit_psf(self, candidates, bbox, band, *, constant: bool = False, crowded: bool = False):
        """The configured determiner's fit; ``constant``: at spatial order 0 (the fainter-star fallback, whose
        noisy stars do not pin down a spatial variation: an order-1 pixel grid on 17 stars of S/N 10-50 left the
        PSF fluxes of a detector's S/N > 50 stars 45 mmag faint); ``crowded``: with ``crowded_psf_max_snr``."""
        choice = self._crowded_psf_choice if crowded else self.config.psf_determiner
        if constant:
            det = _order0_choice(choice).make()
        else:
            det = self.crowded_psf_determiner if crowded else self.psf_determiner
        if self.config.psf_determiner.name == "pixelgrid":
            return det.determine_psf(candidates, bbox, band=band)
        return det.determine_psf(candidates, bbox)

    def psf_candidates(self, exposure: Exposure, src: Table, isolated_source_table: Table, *,
                       band: str | None = None):
        """The non-reserved PSF candidates of one detector, as `compute_psf_and_ap_corr_map` chooses them (the
        fainter-star fallback included), for pooling into a visit-level PSF; None when there are none."""
        footprints, fp_index = footprints_from_detected(exposure, src)
        sel = self._select_psf_stars(exposure, src, isolated_source_table, footprints, fp_index,
                                     self.source_selector)
        n_fit = len(sel.candidates) if sel.candidates is not None else 0
        if self.config.do_faint_psf_fallback and n_fit < self._faint_fallback_threshold(band):
            faint = self._select_psf_stars(exposure, src, isolated_source_table, footprints, fp_index,
                                           self.faint_source_selector)
            if faint.candidates is not None and len(faint.candidates) > n_fit:
                sel = faint
        return sel.candidates if sel.candidates is not None and len(sel.candidates) else None

    def compute_psf_and_ap_corr_map(self, visit: int, detector: int, exposure: Exposure, src: Table,
                                    isolated_source_table: Table, *, band: str | None = None,
                                    visit_psf=None) -> _DetectorOutput:
        """PSF, ap-corr map and measured star table of one detector, with its `DetectorStatus`.

        ``exposure`` is not modified (the new PSF goes on a shallow copy; the measurement's noise
        replacement restores the pixels). ``measured`` is None exactly when the detector gets no row.
        ``visit_psf``: ``(psf, reason)``, a visit-level PSF (`apply_visit_level_psf`) used instead of a fit of
        the detector's own stars, the detector degraded with ``reason``.
        """
        c = self.config
        status = DetectorStatus(detector=int(detector))
        timings = status.timings

        def fail(kind, err=None, psf=None, measured=None):
            status.status = kind
            if err is not None:
                status.error_type = type(err).__name__
                status.message = str(err)
            log.warning("visit %d detector %d: %s%s", visit, detector, kind, f" ({err})" if err else "")
            return _DetectorOutput(psf, None, measured, status)

        t0 = time.perf_counter()
        crowded = resolve_crowded_field(c.crowded_field, exposure.metadata)
        # 1. footprints of every source, for noise replacement
        footprints, fp_index = footprints_from_detected(exposure, src)
        # 2-7. selection, isolated-star match, candidates
        sel = self._select_psf_stars(exposure, src, isolated_source_table, footprints, fp_index, self.source_selector)
        need = self._faint_fallback_threshold(band)
        n_fit = len(sel.candidates) if sel.candidates is not None else 0
        faint_reason = ""
        bright = sel
        if c.do_faint_psf_fallback and n_fit < need:
            # Too few stars above the selector's S/N for more than a constant PSF from a handful of them (a sparse
            # field, a blue band): fainter isolated stars, the configured cut's ones among them.
            faint = self._select_psf_stars(exposure, src, isolated_source_table, footprints, fp_index,
                                           self.faint_source_selector)
            n_faint = len(faint.candidates) if faint.candidates is not None else 0
            if n_faint > n_fit:
                faint_reason = (f"psf_faint_stars: PSF candidates down to S/N {c.min_snr_fallback:g} ({n_faint} to "
                                f"fit, a constant PSF: spatial order 0 instead of {self._configured_order(band)}), the "
                                f"configured S/N cut leaving {n_fit}, fewer than the {need} of a linear PSF")
                sel = faint
        status.n_selected = sel.n_selected
        if sel.failure is not None and sel.failure[0] in ("no_selected_sources", "no_isolated_matches"):
            timings["selection"] = time.perf_counter() - t0
            return fail(*sel.failure)
        selected, sel_index, cx, cy = sel.selected, sel.sel_index, sel.cx, sel.cy
        n = len(selected)
        status.n_matched = n
        status.n_reserved = int(np.sum(selected["calib_psf_reserved"]))
        timings["selection"] = time.perf_counter() - t0
        if sel.failure is not None:  # candidates_failed
            timings["candidates"] = 0.0
            return fail(*sel.failure, measured=self._map_to_output(selected))
        candidates, cand_rows = sel.candidates, sel.cand_rows
        status.n_candidates = len(candidates)

        # 9. the PSF fit
        t0 = time.perf_counter()
        reasons = []
        if visit_psf is not None:
            psf, visit_reason = visit_psf
            status.psf_spatial_order = 0
            reasons.append(visit_reason)
            used = np.zeros(n, bool)
        else:
            try:
                try:
                    result = self._fit_psf(candidates, exposure.bbox, band, constant=bool(faint_reason),
                                           crowded=crowded)
                except (PsfTooFewStarsError, PsfFitError) as err:
                    if not (c.do_faint_psf_fallback and not faint_reason):
                        raise
                    # the configured cut's stars give no PSF that passes its checks: add the fainter ones
                    faint = self._select_psf_stars(exposure, src, isolated_source_table, footprints, fp_index,
                                                   self.faint_source_selector)
                    if faint.candidates is None or len(faint.candidates) <= len(candidates):
                        raise
                    faint_reason = (f"psf_faint_stars: PSF candidates down to S/N {c.min_snr_fallback:g} "
                                    f"({len(faint.candidates)} to fit, a constant PSF: spatial order 0 instead of "
                                    f"{self._configured_order(band)}), the configured S/N cut's fit failed "
                                    f"({type(err).__name__}: {err})")
                    sel = faint
                    selected, sel_index, cx, cy = sel.selected, sel.sel_index, sel.cx, sel.cy
                    n = len(selected)
                    status.n_selected, status.n_matched = sel.n_selected, n
                    status.n_reserved = int(np.sum(selected["calib_psf_reserved"]))
                    candidates, cand_rows = sel.candidates, sel.cand_rows
                    status.n_candidates = len(candidates)
                    result = self._fit_psf(candidates, exposure.bbox, band, constant=True, crowded=crowded)
            except PsfTooFewStarsError as err:
                timings["psf"] = time.perf_counter() - t0
                out = fail("psf_too_few_stars", err, measured=self._map_to_output(selected))
                status.degraded_reason = faint_reason
                return out
            except PsfFitError as err:
                timings["psf"] = time.perf_counter() - t0
                out = fail("psf_check_failed", err, measured=self._map_to_output(selected))
                status.degraded_reason = faint_reason
                return out
            except Exception as err:  # noqa: BLE001 - any fit failure gives a row without PSF (as LSST)
                timings["psf"] = time.perf_counter() - t0
                out = fail("psf_fit_failed", err, measured=self._map_to_output(selected))
                status.degraded_reason = faint_reason
                return out
            psf = result.psf
            ax, ay = psf.average_position
            if not math.isfinite(psf.compute_shape(ax, ay).determinant_radius):
                timings["psf"] = time.perf_counter() - t0
                return fail("psf_nan_size", RuntimeError(f"PSF size at ({ax:.1f}, {ay:.1f}) is NaN"),
                            measured=self._map_to_output(selected))
            md = result.metadata
            status.psf_spatial_order = int(md.get("spatial_order_used", md.get("spatial_order", -1)))
            if faint_reason:
                reasons.append(faint_reason)
                log.warning("visit %d detector %d: %s", visit, detector, faint_reason)
            if result.order_reduced:
                reason = (f"psf_order_reduced: spatial order {status.psf_spatial_order} instead of "
                          f"{md['spatial_order_configured']} ({md.get('order_step_down_reason', '')})")
                reasons.append(reason)
                log.warning("visit %d detector %d: %s", visit, detector, reason)
            used = np.zeros(n, bool)
            used[cand_rows[np.asarray(result.used, bool)]] = True
        status.degraded_reason = "; ".join(reasons)
        selected["calib_psf_used"] = used
        status.n_used = int(used.sum())
        timings["psf"] = time.perf_counter() - t0
        measured = self._map_to_output(selected)

        # 10-11. measurement with the new PSF, every input footprint replaced by noise
        t0 = time.perf_counter()
        exp = copy.copy(exposure)
        exp.psf = psf
        try:
            record_fps, noise_fps, noise_index = self._record_footprints(footprints, sel_index, cx, cy, psf)
            self.measurement.run(measured, exp, record_fps, centroids=(cx, cy), noise_footprints=noise_fps,
                                 noise_index=noise_index)
            self._set_slots(measured, dict(src.meta.get("slots", {})))
        except Exception as err:  # noqa: BLE001
            timings["measurement"] = time.perf_counter() - t0
            return fail("measurement_failed", err, psf=psf, measured=measured)
        timings["measurement"] = time.perf_counter() - t0

        # 13-15. aperture corrections
        t0 = time.perf_counter()
        try:
            ap_res = (self.crowded_measure_ap_corr if crowded else self.measure_ap_corr).run(measured, exp)
            ap_corr_map = ap_res.ap_corr_map
        except Exception as err:  # noqa: BLE001 - MeasureApCorrError and any other failure
            timings["ap_corr"] = time.perf_counter() - t0
            return fail("ap_corr_failed", err, psf=psf, measured=measured)
        reasons = [status.degraded_reason] if status.degraded_reason else []
        if ap_res.degraded:
            reasons.append(f"aperture correction: {ap_res.degraded_reason}")
        if reasons:
            status.status, status.message = "degraded", "; ".join(reasons)
        if exposure.ap_corr_map is not None:
            for key, field in exposure.ap_corr_map.items():
                if key not in ap_corr_map:
                    ap_corr_map[key] = field
        self.apply_ap_corr.run(measured, ap_corr_map)
        timings["ap_corr"] = time.perf_counter() - t0
        return _DetectorOutput(psf, ap_corr_map, measured, status)

    @staticmethod
    def _record_footprints(footprints: FootprintSet, index: np.ndarray, cx, cy, psf):
        """Each star's measurement footprint (its region, one peak at its centroid pixel), the regions
        replaced by noise (plus a disc for a star outside every region) and each star's region."""
        noise = list(footprints)
        noise_index = np.asarray(index, dtype=np.int64).copy()
        records = []
        for k in range(len(cx)):
            if noise_index[k] < 0:
                sigma = psf.compute_shape(cx[k], cy[k]).determinant_radius
                noise.append(_disc(cx[k], cy[k], 3.0 * (sigma if math.isfinite(sigma) else 2.0) + 2.0)
                             .clipped_to(footprints.bbox))
                noise_index[k] = len(noise) - 1
            spans = noise[noise_index[k]].spans
            peak = make_peaks([[math.floor(cx[k] + 0.5), math.floor(cy[k] + 0.5)]], [0.0], [0.0], ids=[k + 1])
            records.append(Footprint._from_normalized(np.array(spans), peak))
        return records, noise, noise_index

    def _finish_detector(self, out: _DetectorOutput, visit: int, detector: int, template: Table) -> Table:
        table = self._conform(out.measured, template)
        table["visit"] = np.full(len(table), visit, np.int64)
        table["detector"] = np.full(len(table), detector, np.int32)
        return table

    @staticmethod
    def _assemble(visit: int, rows: list, tables: list, template: Table, statuses: dict):
        if not tables:
            raise NoWorkFound(f"visit {visit}: no detector produced a finalized star table")
        cat = _make_psf_ap_corr_cat([r[0] for r in rows], [visit] * len(rows), [r[1] for r in rows],
                                    [r[2] for r in rows], [r[3].status for r in rows], [r[3].message for r in rows])
        table = vstack(tables, join_type="exact", metadata_conflicts="silent") if len(tables) > 1 else tables[0]
        table.meta = copy.deepcopy(template.meta)
        result = FinalizeCharacterizationResult(psf_ap_corr_cat=cat, output_table=table, detector_status=statuses)
        _mark_degraded(result)
        return result


class FinalizeCharacterizationTask(FinalizeCharacterizationTaskBase):
    """Finalize every detector of one visit (see the module docstring)."""

    _DefaultName = "finalizeCharacterization"

    def run(self, visit: int, band: str, isolated_star_cat_dict: Mapping, isolated_star_source_dict: Mapping,
            src_dict: Mapping, calexp_dict: Mapping) -> FinalizeCharacterizationResult:
        """Run on one visit.

        Parameters
        ----------
        visit : int
        band : str
        isolated_star_cat_dict, isolated_star_source_dict : mapping tract -> astropy Table
            The tracts' isolated-star and isolated-source tables (`IsolatedStarAssociationTask`).
        src_dict, calexp_dict : mapping detector -> Table / `Exposure` (or a callable returning it: a
            deferred load)
            The calibrated source catalogs (``single_visit_star``) and exposures (``preliminary_visit_image``).

        Raises
        ------
        NoWorkFound
            No isolated source in this visit, or no detector gave a star table.
        """
        detectors = sorted(set(src_dict) & set(calexp_dict))
        if set(src_dict) != set(calexp_dict):
            log.warning("visit %d: detectors with src %s and with calexp %s differ; using %s", visit,
                        sorted(src_dict), sorted(calexp_dict), detectors)
        iso = self.isolated_sources(visit, band, isolated_star_cat_dict, isolated_star_source_dict)
        parts = {}
        for det in detectors:
            parts[det] = self.run_detector(visit, band, det, src_dict[det], calexp_dict[det], iso,
                                           template=not parts)
        return self.assemble(visit, band, parts, iso, src_dict, calexp_dict)

    def isolated_sources(self, visit: int, band: str, isolated_star_cat_dict: Mapping,
                         isolated_star_source_dict: Mapping) -> Table:
        """The visit's isolated-star sources with their reserve flags (`concat_isolated_star_cats`).

        Raises
        ------
        NoWorkFound
            No isolated source in this visit.
        """
        iso = concat_isolated_star_cats(band, isolated_star_cat_dict, isolated_star_source_dict, visit=visit,
                                        reserve_selection=self.reserve_selection, id_column=self.config.id_column)
        if len(iso) == 0:
            raise NoWorkFound(f"visit {visit}: no isolated-star source in this visit")
        return iso

    def run_detector(self, visit: int, band: str, detector: int, src, exposure, isolated_source_table: Table, *,
                     template: bool = True) -> "DetectorPart":
        """One detector's part of `run` (the PSF star selection, the PSF fit, the measurement of the PSF stars
        and its aperture correction; `compute_psf_and_ap_corr_map`), for `assemble`; what a per-detector
        worker computes. ``src`` and ``exposure`` as `run`'s (or callables); ``isolated_source_table``: the
        visit's isolated sources (`isolated_sources`), or those of this detector (the same matches: source ids
        are unique). ``template``: also build the output schema from this detector (`assemble` uses the
        first detector's)."""
        src = _load(src)
        exposure = _load(exposure)
        schema = self._output_template(src, exposure) if template else None
        out = self.compute_psf_and_ap_corr_map(visit, detector, exposure, src, isolated_source_table, band=band)
        return DetectorPart(detector=int(detector), status=out.status, psf=out.psf, ap_corr_map=out.ap_corr_map,
                            measured=out.measured, template=schema, bbox=exposure.bbox,
                            input_ap_corr_map=exposure.ap_corr_map)

    def assemble(self, visit: int, band: str, parts: Mapping, isolated_source_table: Table, src_dict: Mapping,
                 calexp_dict: Mapping) -> FinalizeCharacterizationResult:
        """The visit's result from its detectors' parts (`run_detector`, ``{detector: part}``; the output schema
        the first detector's): the rows and star tables in detector order, then the visit-level fallbacks
        (`apply_visit_level_psf`, which reads the inputs again from ``src_dict`` / ``calexp_dict`` when a
        detector's own PSF failed, and `apply_visit_level_ap_corr`).

        Raises
        ------
        NoWorkFound
            No detector gave a star table.
        """
        detectors = sorted(parts)
        rows, tables, statuses = [], [], {}
        inputs = {}  # detector -> (bbox, input ap-corr map), for the visit-level fallback
        template = parts[detectors[0]].template if detectors else None
        for det in detectors:
            part = parts[det]
            statuses[det] = part.status
            if part.measured is None:
                continue
            out = _DetectorOutput(part.psf, part.ap_corr_map, part.measured, part.status)
            rows.append((det, part.psf, part.ap_corr_map, part.status))
            tables.append(self._finish_detector(out, visit, det, template))
            inputs[det] = (part.bbox, part.input_ap_corr_map)
        result = self._assemble(visit, rows, tables, template, statuses)
        if self.config.do_visit_level_psf:
            pairs = {det: (lambda d=det: (_load(src_dict[d]), _load(calexp_dict[d]))) for det in detectors}
            apply_visit_level_psf(result, pairs, self.config, visit=visit, band=band,
                                  isolated_source_table=isolated_source_table)
        if self.config.do_visit_level_ap_corr:
            apply_visit_level_ap_corr(result, inputs, self.config)
        return result


@dataclasses.dataclass
class DetectorPart:
    """One detector's part of `FinalizeCharacterizationTask.run` (`FinalizeCharacterizationTask.run_detector`):
    its `DetectorStatus`, refit PSF and ap-corr map (None when they failed), its measured PSF-star table (None
    exactly when the detector gets no row), the output schema built from it (a zero-row table, or None), its
    bbox and its input ap-corr map (for the visit-level fallback). Picklable and without pixels: what crosses
    from a per-detector worker."""

    detector: int
    status: DetectorStatus
    psf: object
    ap_corr_map: ApCorrMap | None
    measured: Table | None
    template: Table | None
    bbox: object
    input_ap_corr_map: ApCorrMap | None


class FinalizeCharacterizationDetectorTask(FinalizeCharacterizationTaskBase):
    """Finalize one detector (the per-detector variant; `ConsolidateFinalizeCharacterizationDetectorTask`
    joins its outputs into the visit task's, identically)."""

    _DefaultName = "finalizeCharacterizationDetector"

    def run(self, visit: int, band: str, detector: int, isolated_star_cat_dict: Mapping,
            isolated_star_source_dict: Mapping, src: Table, exposure: Exposure) -> FinalizeCharacterizationResult:
        """Run on one detector; arguments as `FinalizeCharacterizationTask.run` for one detector.

        Raises
        ------
        NoWorkFound
            No isolated source on this detector in this visit, or the detector gets no row
            (no selected source / no isolated match).
        """
        iso = concat_isolated_star_cats(band, isolated_star_cat_dict, isolated_star_source_dict, visit=visit,
                                        detector=detector, reserve_selection=self.reserve_selection,
                                        id_column=self.config.id_column)
        if len(iso) == 0:
            raise NoWorkFound(f"visit {visit} detector {detector}: no isolated-star source")
        src = _load(src)
        exposure = _load(exposure)
        template = self._output_template(src, exposure)
        out = self.compute_psf_and_ap_corr_map(visit, detector, exposure, src, iso, band=band)
        statuses = {detector: out.status}
        if out.measured is None:
            raise NoWorkFound(f"visit {visit} detector {detector}: {out.status.status}")
        table = self._finish_detector(out, visit, detector, template)
        return self._assemble(visit, [(detector, out.psf, out.ap_corr_map, out.status)], [table], template, statuses)


class ConsolidateFinalizeCharacterizationDetectorConfig(BaseModel):
    """No options (LSST's task has none either)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsolidateFinalizeCharacterizationDetectorTask:
    """Join the detector task's outputs of one visit, in detector order (as LSST's task of this name)."""

    ConfigClass = ConsolidateFinalizeCharacterizationDetectorConfig
    _DefaultName = "consolidateFinalizeCharacterizationDetector"

    def __init__(self, config: ConsolidateFinalizeCharacterizationDetectorConfig | None = None):
        self.config = config if config is not None else ConsolidateFinalizeCharacterizationDetectorConfig()

    def run(self, *, psf_ap_corr_detector_dict: Mapping, src_detector_table_dict: Mapping
            ) -> FinalizeCharacterizationResult:
        """Stack the per-detector ``psf_ap_corr_cat`` rows and star tables, in detector order.

        Raises
        ------
        NoWorkFound
            No input.
        ValueError
            The two dicts have different detectors, or a catalog lacks its detector's row.
        """
        if not psf_ap_corr_detector_dict and not src_detector_table_dict:
            raise NoWorkFound("no per-detector finalize outputs to consolidate")
        if set(psf_ap_corr_detector_dict) != set(src_detector_table_dict):
            raise ValueError(f"psf_ap_corr_detector_dict has detectors {sorted(psf_ap_corr_detector_dict)} but "
                             f"src_detector_table_dict has {sorted(src_detector_table_dict)}")
        detectors = sorted(psf_ap_corr_detector_dict)
        parts = []
        for det in detectors:
            cat = _load(psf_ap_corr_detector_dict[det])
            hit = np.flatnonzero(np.asarray(cat["detector"]) == det)
            if hit.size != 1:
                raise ValueError(f"the psf_ap_corr catalog of detector {det} has {hit.size} rows for it")
            parts.append(cat[hit])
        cat = _make_psf_ap_corr_cat([int(p["detector"][0]) for p in parts], [int(p["visit"][0]) for p in parts],
                                    [p["psf"][0] for p in parts], [p["ap_corr_map"][0] for p in parts],
                                    [str(p["status"][0]) for p in parts], [str(p["message"][0]) for p in parts])
        tables = [_load(src_detector_table_dict[d]) for d in detectors]
        table = vstack(tables, join_type="exact", metadata_conflicts="silent") if len(tables) > 1 else tables[0].copy()
        table.meta = copy.deepcopy(tables[0].meta)
        result = FinalizeCharacterizationResult(psf_ap_corr_cat=cat, output_table=table)
        _mark_degraded(result)
        return result


#: Detector statuses whose PSF could not be fitted from the detector's own stars (`apply_visit_level_psf`).
PSF_FAILURES = ("psf_too_few_stars", "psf_check_failed", "psf_fit_failed", "psf_nan_size")


def _crowded_choice(choice: PsfDeterminerChoice, max_snr: float | None) -> PsfDeterminerChoice:
    """The determiner choice for a crowded detector: the pixel grid's S/N cap raised to ``max_snr``."""
    if choice.name != "pixelgrid" or max_snr is None:
        return choice
    return choice.model_copy(update={"pixelgrid": choice.pixelgrid.model_copy(update={"max_snr": float(max_snr)})})


def _order0_choice(choice: PsfDeterminerChoice) -> PsfDeterminerChoice:
    """The determiner choice at spatial order 0 (a constant over the detector)."""
    if choice.name == "pixelgrid":
        return choice.model_copy(update={"pixelgrid": choice.pixelgrid.model_copy(update={
            "spatial_order": 0, "spatial_order_per_band": {}})})
    return choice.model_copy(update={"pca": choice.pca.model_copy(update={"spatial_order": 0})})


def pool_psf_candidates(parts: Mapping) -> PsfCandidates | None:
    """One `PsfCandidates` of the stamps of several detectors' candidates (``parts``: detector -> `PsfCandidates`
    or None), each stamp with its own detector's origin ``xy0`` and centroid: the stars stay in their own
    detector's pixels. The table has one row per stamp (all ``used``) and a ``detector`` column."""
    parts = {d: p for d, p in parts.items() if p is not None and len(p)}
    if not parts:
        return None
    keys = ("x", "y", "footprint_index", "psf_max_value", "used", "skip_reason")
    table = {k: [] for k in keys}
    table["detector"] = []
    for d, p in parts.items():
        kept = np.asarray(p.table["used"], bool)
        for key in keys:
            table[key].append(np.asarray(p.table[key])[kept])
        table["detector"].append(np.full(int(kept.sum()), int(d), np.int64))
    table = {k: np.concatenate(v) for k, v in table.items()}
    table["index"] = np.arange(table["x"].size, dtype=np.int64)
    ps = list(parts.values())
    return PsfCandidates(np.concatenate([p.image for p in ps]), np.concatenate([p.mask for p in ps]),
                         np.concatenate([p.variance for p in ps]), np.concatenate([p.xy0 for p in ps]), table)


def apply_visit_level_psf(result: FinalizeCharacterizationResult, inputs: Mapping, config: FinalizeCharacterizationConfig,
                          *, visit: int, band: str | None, isolated_source_table: Table) -> list[int]:
    """Give every detector of ``result`` whose own stars gave no PSF (a status of `PSF_FAILURES`, even after
    the fainter-star fallback) a visit-level one, then its measurement and aperture correction as usual. Not
    LSST, which fails the detector.

    The visit-level PSF is the configured determiner at spatial order 0 (a constant over the detector, the failing
    detector's bbox) fitted on the non-reserved PSF candidates of every detector of ``inputs``
    (`FinalizeCharacterizationTaskBase.psf_candidates`, the failing one's own included), each stamp in its own
    detector's pixels; the determiner checks it as any model (`visitcal.psf.checks`). The PSF varies over the
    focal plane, so the model is the visit's mean PSF: degraded. The detector's row gets it, status ``degraded``
    (or a later failure's, e.g. ``ap_corr_failed``, which `apply_visit_level_ap_corr` may then answer) and the
    message ``"psf_visit_level: a constant PSF from N stars of M detectors (own fit: ...)"``; its star-table
    rows are remeasured with it (``calib_psf_used`` False: the fit was the visit's). A pooled fit that fails too
    leaves the detector as it was, the pooled error added to its message.

    Parameters
    ----------
    result : `FinalizeCharacterizationResult`
        A visit's result (the visit task's, or the consolidated detector tasks'), modified in place.
    inputs : mapping detector -> (``src``, `Exposure`), or a callable returning that pair
        Every detector of the visit with an input catalog and exposure.
    config : `FinalizeCharacterizationConfig`
    visit : int
    band : str or None
    isolated_source_table : astropy.table.Table
        This visit's isolated sources with their reserve flags (`concat_isolated_star_cats`).

    Returns
    -------
    list of int
        The detectors given a visit-level PSF.
    """
    cat = result.psf_ap_corr_cat
    failed = [int(d) for d, st, p in zip(cat["detector"], cat["status"], cat["psf"])
              if str(st) in PSF_FAILURES and p is None]
    if not failed:
        return []
    task = FinalizeCharacterizationTask(config)
    loaded = {int(d): _load(inputs[d]) for d in sorted(inputs)}
    pooled = pool_psf_candidates({d: task.psf_candidates(exp, src, isolated_source_table, band=band)
                                  for d, (src, exp) in loaded.items()})
    order0 = _order0_choice(config.psf_determiner)
    determiner = order0.make()
    done = []
    statuses = [str(x) for x in cat["status"]]
    messages = [str(m) for m in cat["message"]]
    psfs, maps = list(cat["psf"]), list(cat["ap_corr_map"])
    new_tables = {}
    template = None
    for det in failed:
        k = int(np.flatnonzero(np.asarray(cat["detector"]) == det)[0])
        src, exposure = loaded[det]
        if pooled is None:
            messages[k] = f"{messages[k]}; no PSF candidate in the visit for a visit-level PSF"
            continue
        try:
            fit = (determiner.determine_psf(pooled, exposure.bbox, band=band) if order0.name == "pixelgrid"
                   else determiner.determine_psf(pooled, exposure.bbox))
            ax, ay = fit.psf.average_position
            if not math.isfinite(fit.psf.compute_shape(ax, ay).determinant_radius):
                raise PsfFitError("size", "the visit-level PSF's size is NaN", 0)
        except (PsfDeterminerError, RuntimeError, ValueError) as err:
            log.warning("visit %d detector %d: the visit-level PSF failed too: %s", visit, det, err)
            messages[k] = f"{messages[k]}; the visit-level PSF failed too: {err}"
            continue
        n_used = int(np.count_nonzero(fit.used))
        n_dets = len(set(np.asarray(pooled.table["detector"])[np.asarray(fit.used, bool)].tolist()))
        reason = (f"psf_visit_level: a constant PSF from {n_used} stars of {n_dets} detector"
                  f"{'s' if n_dets != 1 else ''} (spatial order 0; own fit: {messages[k]})")
        out = task.compute_psf_and_ap_corr_map(visit, det, exposure, src, isolated_source_table, band=band,
                                               visit_psf=(fit.psf, reason))
        if out.status.status in ("ok",) or out.status.ok:
            out.status.status, out.status.message = "degraded", out.status.message or reason
        elif not out.status.message.startswith(reason):
            out.status.message = f"{reason}; then {out.status.status}: {out.status.message}"
        out.status.degraded_reason = reason
        log.warning("visit %d detector %d: %s", visit, det, reason)
        if template is None:
            template = task._output_template(src, exposure)
        if out.measured is not None:
            new_tables[det] = task._finish_detector(out, visit, det, template)
        psfs[k], maps[k], statuses[k], messages[k] = out.psf, out.ap_corr_map, out.status.status, out.status.message
        result.detector_status[det] = out.status
        done.append(det)
    if done:
        table = result.output_table
        det_col = np.asarray(table["detector"])
        pieces = []
        for d in [int(x) for x in cat["detector"]]:
            if d in new_tables:
                pieces.append(task._conform(new_tables[d], table[:0]) if len(new_tables[d]) else None)
            else:
                pieces.append(table[det_col == d])
        pieces = [p for p in pieces if p is not None]
        meta = copy.deepcopy(table.meta)
        joined = vstack(pieces, join_type="exact", metadata_conflicts="silent") if len(pieces) > 1 else pieces[0]
        joined.meta = meta
        result.output_table = joined
    result.psf_ap_corr_cat = _make_psf_ap_corr_cat(cat["detector"], cat["visit"], psfs, maps, statuses, messages)
    _mark_degraded(result)
    return done


def _uncorrected_ap_corr_stars(table: Table, names: list[str], keep: np.ndarray) -> Table:
    """The rows ``keep`` of a finalized star table with each name's flux and error as measured, before the
    aperture correction (``instFlux / <name>_apCorr`` on the rows it corrected: ``_flag_apCorr`` False and a
    finite, positive ``_apCorr``), so that the rows of every detector can be pooled into one fit."""
    out = table[keep].copy(copy_data=True)
    for name in names:
        ap_col, flag_col = f"{name}_apCorr", f"{name}_flag_apCorr"
        if ap_col not in out.colnames:
            continue
        a = np.asarray(out[ap_col], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            corrected = np.isfinite(a) & (a > 0)
        if flag_col in out.colnames:
            corrected &= ~np.asarray(out[flag_col], dtype=bool)
        for suffix in ("_instFlux", "_instFluxErr"):
            col = np.asarray(out[name + suffix], dtype=np.float64).copy()
            col[corrected] /= a[corrected]
            out[name + suffix] = col
    return out


def apply_visit_level_ap_corr(result: FinalizeCharacterizationResult, inputs: Mapping,
                              config: FinalizeCharacterizationConfig) -> list[int]:
    """Give every detector of ``result`` whose aperture correction failed (status ``ap_corr_failed``, with a
    PSF) a visit-level one: per flux, a constant (order 0) fitted by `MeasureApCorrTask` (``measure_ap_corr``'s
    selector and clipping, its fallback to fainter stars) on the measured stars of all the visit's detectors
    with a PSF (fluxes before their own detector's correction, `_uncorrected_ap_corr_stars`). Not LSST, which
    leaves the detector without a map (reprocessing then fails it).

    The detector's row gets the map (plus the input map's entries it lacks, the calibration-flux
    normalisation), status ``degraded`` and the message ``"visit-level ap corr (N stars from M detectors): ..."``;
    its star-table rows are corrected with it (`ApplyApCorrTask`); ``result.detector_status`` is updated.
    ``result.output_table.meta`` gets ``DEGRADED`` / ``DEGRADED_REASON`` (every degraded detector of the visit).
    A pooled fit that fails too leaves the detector as it was.

    Parameters
    ----------
    result : `FinalizeCharacterizationResult`
        A visit's result (the visit task's, or the consolidated detector tasks'), modified in place.
    inputs : mapping detector -> (`Box2I`, `ApCorrMap` or None), or a callable returning that pair
        Each failed detector's bbox (the map's domain) and the input exposure's ap-corr map.
    config : `FinalizeCharacterizationConfig`

    Returns
    -------
    list of int
        The detectors given a visit-level map.
    """
    cat, table = result.psf_ap_corr_cat, result.output_table
    statuses = [str(s) for s in cat["status"]]
    failed = [k for k, st in enumerate(statuses) if st == "ap_corr_failed" and cat["psf"][k] is not None]
    done = []
    if failed and len(table):
        with_psf = {int(d) for d, p in zip(cat["detector"], cat["psf"]) if p is not None}
        det_col = np.asarray(table["detector"])
        keep = np.isin(det_col, sorted(with_psf))
        pooled_task = MeasureApCorrTask(config.measure_ap_corr.model_copy(update={
            "fit_config": config.measure_ap_corr.fit_config.model_copy(update={"order_x": 0, "order_y": 0})}))
        names = pooled_task.names_in(table)
        pooled = _uncorrected_ap_corr_stars(table, names, keep)
        maps, messages, psfs = list(cat["ap_corr_map"]), [str(m) for m in cat["message"]], list(cat["psf"])
        for k in failed:
            det = int(cat["detector"][k])
            bbox, input_map = _load(inputs[det])
            stars = pooled.copy(copy_data=True)
            cx, cy = bbox.center
            for axis, value in (("x", cx), ("y", cy)):  # a constant: every star at the detector's centre
                stars[resolve_column(stars, f"slot_Centroid_{axis}")] = np.full(len(stars), float(value))
            try:
                res = pooled_task.run(stars, bbox)
            except Exception as err:  # noqa: BLE001 - the pooled stars cannot do it either: left failed
                log.warning("visit-level aperture correction for detector %d failed too: %s", det, err)
                messages[k] = f"{messages[k]}; the visit-level fit failed too: {err}"
                continue
            n_used = max(int(v["n_used"]) for key, v in res.metadata.items() if isinstance(v, dict))
            used_rows = np.zeros(len(stars), bool)
            for name in names:
                col = f"apcorr_{name}_used"
                if col in stars.colnames:
                    used_rows |= np.asarray(stars[col], bool)
            n_det = len(set(np.asarray(stars["detector"])[used_rows].tolist()))
            ap_corr_map = res.ap_corr_map
            if input_map is not None:
                for key, field in input_map.items():
                    if key not in ap_corr_map:
                        ap_corr_map[key] = field
            values = ", ".join(f"{name} {res.ap_corr_map[name + '_instFlux'].mean():.4f}" for name in names
                               if name + "_instFlux" in res.ap_corr_map)
            reason = (f"visit-level ap corr ({n_used} stars from {n_det} detector{'s' if n_det != 1 else ''}: {values}"
                      + (f"; {res.degraded_reason}" if res.degraded_reason else "") + f"); own fit: {messages[k]}")
            rows = np.flatnonzero(det_col == det)
            sub = table[rows]
            ApplyApCorrTask(config.apply_ap_corr).run(sub, ap_corr_map)
            for name in sub.colnames:
                if name in table.colnames:
                    table[name][rows] = sub[name]
            ds = result.detector_status.get(det)
            if ds is not None and ds.degraded_reason:  # e.g. its PSF was fitted at a lower order too
                reason = f"{ds.degraded_reason}; {reason}"
            maps[k], messages[k], statuses[k] = ap_corr_map, reason, "degraded"
            if ds is not None:
                ds.status, ds.message, ds.error_type = "degraded", reason, ""
            log.warning("visit %d detector %d: %s", int(cat["visit"][k]), det, reason)
            done.append(det)
        result.psf_ap_corr_cat = _make_psf_ap_corr_cat(cat["detector"], cat["visit"], psfs, maps, statuses, messages)
    _mark_degraded(result)
    return done


def _mark_degraded(result: FinalizeCharacterizationResult) -> None:
    """``DEGRADED`` / ``DEGRADED_REASON`` in the star table's metadata, from the degraded rows of the catalog."""
    cat = result.psf_ap_corr_cat
    reasons = [f"detector {int(d)}: {m}" for d, s, m in zip(cat["detector"], cat["status"], cat["message"])
               if str(s) == "degraded"]
    result.output_table.meta["DEGRADED"] = bool(reasons)
    result.output_table.meta["DEGRADED_REASON"] = "; ".join(reasons)


def _load(obj):
    """A deferred load: call it if it is callable (and not a table or exposure)."""
    if callable(obj) and not isinstance(obj, (Table, Exposure)):
        return obj()
    return obj
