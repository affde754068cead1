"""finalize takes LSSTCam's configuration: the lsstcam preset (obs_lsst's overrides, lsst-spec.md), the fields
LSST sets that visitcal accepts, and a refusal naming LSST's field for what visitcal does not implement."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from visitcal.cli import main
from visitcal.pipeline.finalize_step import FinalizeStepConfig
from visitcal.tasks.finalize_characterization import FinalizeCharacterizationConfig


def test_lsstcam_preset_is_obs_lsst_overrides():
    cfg = FinalizeCharacterizationConfig.preset("lsstcam")
    grid = cfg.psf_determiner.pixelgrid
    assert grid.spatial_order_per_band == {"u": 2, "g": 4, "r": 4, "i": 4, "z": 4, "y": 4}
    assert grid.fit_center is False
    assert not cfg.do_add_sky_moments and not cfg.do_add_fgcm_photometry
    # the per-band order is what the determiner fits
    assert grid.order_for_band("u") == 2 and grid.order_for_band("r") == 4 and grid.order_for_band("N656") == 2
    assert FinalizeCharacterizationConfig.preset("lsst") == FinalizeCharacterizationConfig()
    with pytest.raises(ValueError, match="unknown preset 'hsc'"):
        FinalizeCharacterizationConfig.preset("hsc")


@pytest.mark.parametrize("field, lsst", [("do_add_sky_moments", "doAddSkyMoments"),
                                         ("do_add_fgcm_photometry", "doAddFgcmPhotometry")])
def test_unimplemented_lsst_options_are_refused_by_name(field, lsst):
    with pytest.raises(ValidationError, match=f"{field}: LSST's {lsst}"):
        FinalizeCharacterizationConfig(**{field: True})
    assert FinalizeCharacterizationConfig(**{field: False}) == FinalizeCharacterizationConfig()


def test_fgcm_bands_are_accepted_and_bounded():
    assert FinalizeCharacterizationConfig(fgcm_photometry_bands=["g", "r"]).fgcm_photometry_bands == ["g", "r"]
    with pytest.raises(ValidationError):
        FinalizeCharacterizationConfig(fgcm_photometry_bands=["x"] * 21)


def test_cli_preset_and_config_laid_over_it(tmp_path):
    import visitcal.cli as cli

    parser = cli.build_parser()
    args = parser.parse_args(["finalize", str(tmp_path), "--preset", "lsstcam"])
    cli._check_step_args(parser, args)
    assert isinstance(args.config, FinalizeStepConfig)
    assert args.config.finalize == FinalizeCharacterizationConfig.preset("lsstcam")
    override = tmp_path / "c.json"
    override.write_text(json.dumps({"finalize": {"psf_determiner": {"pixelgrid": {"spatial_order_per_band":
                                                                                   {"u": 1}}}}}))
    args = parser.parse_args(["finalize", str(tmp_path), "--preset", "lsstcam", "--config", str(override)])
    cli._check_step_args(parser, args)
    grid = args.config.finalize.psf_determiner.pixelgrid
    # laid over the preset at any depth: u changed, the other bands kept
    assert grid.spatial_order_per_band == {"u": 1, "g": 4, "r": 4, "i": 4, "z": 4, "y": 4} and grid.fit_center is False
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"finalize": {"do_add_sky_moments": True}}))
    with pytest.raises(SystemExit) as exc:
        main(["finalize", str(tmp_path), "--config", str(bad)])
    assert exc.value.code == 2
