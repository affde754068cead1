"""Every configuration value that sizes memory or time is bounded (issue 22).

The walk starts at `visitcal.pipeline.chain.RunConfig` (every step's configuration) and the configurations
that are not reached from it (the simulator's, the windowed centroid's), and follows every nested model,
including those inside ``X | None``, tuples and dicts.
"""

from __future__ import annotations

import inspect
import re
import typing

import annotated_types
import pytest
from pydantic import BaseModel, ValidationError

from visitcal.detection.detection import SourceDetectionConfig
from visitcal.measurement.plugins.windowed_centroid import WindowedCentroidConfig
from visitcal.pipeline.chain import RunConfig
from visitcal.psf.candidates import PsfCandidatesConfig
from visitcal.sim.config import CAMERA_PRESETS, CameraConfig, SimConfig

ROOTS = (RunConfig, SimConfig, CameraConfig, WindowedCentroidConfig)

#: A name token that says the value is a size, a count, an iteration, a radius or an order.
SIZE_TOKEN = re.compile(r"^(size|max|n|num|iter\w*|niteration|grow|radius|radii|order|width|bins?|binmax|pixels?|"
                        r"stamp|candidates|sampling|oversample|components|folds|peaks|area|apertures)$")

#: Fields whose name matches but that need no upper bound, each with why.
ALLOWED_UNBOUNDED = {
    # bounded 2 to 9 by their field validators (order is int | "auto", which Field(le=) cannot express)
    "FitTanSipWcsConfig.order", "FitTanSipWcsConfig.order_range",
    # selection cuts on measured values (0 = no cut): any finite value is meaningful and none sizes anything
    "ObjectSizeStarSelectorConfig.flux_max", "ObjectSizeStarSelectorConfig.signal_to_noise_max",
    "PhotoCalSourceSelectorConfig.extendedness_max",
}


def _models(annotation) -> list[type[BaseModel]]:
    out = []
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        out.append(annotation)
    for arg in typing.get_args(annotation):
        out += _models(arg)
    return out


def _has_upper(metadata) -> bool:
    return any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in metadata)


def _numbers(annotation) -> list[tuple[type, bool]]:
    """The int/float types inside ``annotation`` with whether each carries its own upper bound (Annotated)."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        inner = [m for x in meta for m in getattr(x, "metadata", [x])]
        return [(t, own or _has_upper(inner)) for t, own in _numbers(base)]
    if annotation in (int, float):
        return [(annotation, False)]
    return [n for arg in typing.get_args(annotation) for n in _numbers(arg)]


def _all_fields():
    seen, out = set(), []

    def walk(model):
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            for sub in _models(field.annotation):
                walk(sub)
            numbers = _numbers(field.annotation)
            if numbers:
                out.append((model, name, field, numbers))

    for root in ROOTS:
        walk(root)
    return out


FIELDS = _all_fields()


def test_the_walk_reaches_the_nested_configurations():
    names = {f"{m.__name__}.{n}" for m, n, *_ in FIELDS}
    # a few deep ones: candidates in finalize and characterize, the detection of every task, the sim
    for name in ("PsfCandidatesConfig.stamp_size", "SourceDetectionConfig.n_sigma_to_grow",
                 "PixelGridPsfDeterminerConfig.model_size", "PcaPsfDeterminerConfig.kernel_size",
                 "BackgroundConfig.bin_size", "SimConfig.detector_width", "SourceDeblendConfig.max_footprint_area"):
        assert name in names
    assert len(names) > 150


@pytest.mark.parametrize("model, name, field, numbers", FIELDS, ids=[f"{m.__name__}.{n}" for m, n, *_ in FIELDS])
def test_size_count_iteration_radius_and_order_fields_are_bounded(model, name, field, numbers):
    if not any(SIZE_TOKEN.match(tok) for tok in name.split("_")):
        return
    key = f"{model.__name__}.{name}"
    bounded = _has_upper(field.metadata) or all(own for _, own in numbers)
    if key in ALLOWED_UNBOUNDED:
        assert not bounded, f"{key} is bounded now: take it off ALLOWED_UNBOUNDED"
        return
    assert bounded, f"{key} sizes memory or time and has no upper bound (Field(le=...))"


@pytest.mark.parametrize("model", sorted({m for m, *_ in FIELDS}, key=lambda m: m.__name__),
                         ids=lambda m: m.__name__)
def test_defaults_satisfy_their_bounds(model):
    required = [n for n, f in model.model_fields.items() if f.is_required()]
    if required:
        pytest.skip(f"{model.__name__} has required fields {required}")
    # pydantic does not validate defaults: validating the dumped defaults checks them against the bounds
    model.model_validate(model().model_dump())


@pytest.mark.parametrize("cls, field, value", [
    (PsfCandidatesConfig, "stamp_size", 5001),           # 21 GB before it was bounded
    (SourceDetectionConfig, "n_sigma_to_grow", 1e6),     # every footprint grown to the whole detector
    (SourceDetectionConfig, "min_pixels", 2**31),        # pybind11's "incompatible function arguments"
])
def test_the_audits_unbounded_values_are_one_line_errors_naming_the_field(cls, field, value):
    with pytest.raises(ValidationError) as info:
        cls(**{field: value})
    err = info.value
    assert err.error_count() == 1
    assert err.errors()[0]["loc"] == (field,)
    assert err.errors()[0]["type"] == "less_than_equal"
    assert field in str(err)


def test_the_bounds_are_reached_from_a_run_config_file():
    with pytest.raises(ValidationError, match="stamp_size"):
        RunConfig.model_validate({"finalize": {"finalize": {"make_psf_candidates": {"stamp_size": 5001}}}})


def test_the_camera_presets_satisfy_their_bounds():
    for preset in CAMERA_PRESETS.values():
        CameraConfig.model_validate(preset.model_dump())


@pytest.mark.parametrize("name", ["lsst", "sparse"])
def test_the_calibrate_presets_satisfy_the_bounds(name):
    """A preset is built with model_copy (not validated): written to a --config file and read back, it must
    still pass."""
    from visitcal.pipeline.calibrate_step import CalibrateStepConfig

    preset = CalibrateStepConfig.preset(name)
    assert CalibrateStepConfig.model_validate(preset.model_dump()) == preset
