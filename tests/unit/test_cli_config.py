"""``--config`` files are laid over the step's defaults: a partial file changes only what it names."""

from __future__ import annotations

import json

import pytest
from visitcal.cli import _load_config
from visitcal.pipeline.calibrate_step import CalibrateStepConfig
from visitcal.pipeline.finalize_step import FinalizeStepConfig
from visitcal.pipeline.reprocess_step import ReprocessStepConfig


class _Parser:
    def error(self, message):
        raise SystemExit(message)


@pytest.mark.parametrize("cls", [CalibrateStepConfig, FinalizeStepConfig, ReprocessStepConfig])
def test_empty_file_gives_the_defaults(cls, tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    assert _load_config(_Parser(), str(path), cls) == cls()
    path.write_text(cls().model_dump_json())  # a full file, as before
    assert _load_config(_Parser(), str(path), cls) == cls()


def test_partial_file_keeps_the_other_defaults_at_every_depth(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"finalize": {"psf_determiner": {"pixelgrid": {"spatial_order": 4}},
                                             "measure_ap_corr": {"fit_weighted": True}}}))
    got = _load_config(_Parser(), str(path), FinalizeStepConfig)
    base = FinalizeStepConfig()
    assert got.finalize.psf_determiner.pixelgrid.spatial_order == 4
    assert got.finalize.psf_determiner.pixelgrid.max_snr == base.finalize.psf_determiner.pixelgrid.max_snr
    assert got.finalize.measure_ap_corr.fit_weighted
    # finalize's own ap-corr selector (no flag or unresolved cuts) survives, not the generic default's
    assert got.finalize.measure_ap_corr.source_selector == base.finalize.measure_ap_corr.source_selector
    path.write_text(json.dumps({"reprocess": {"do_use_sky_corr": True}}))
    assert _load_config(_Parser(), str(path), ReprocessStepConfig).reprocess.do_use_sky_corr


def test_bad_files_are_usage_errors_naming_them(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="expected a JSON object"):
        _load_config(_Parser(), str(path), FinalizeStepConfig)
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="not JSON"):
        _load_config(_Parser(), str(path), FinalizeStepConfig)
    path.write_text(json.dumps({"finalize": {"no_such_field": 1}}))
    with pytest.raises(SystemExit, match="finalize.no_such_field"):
        _load_config(_Parser(), str(path), FinalizeStepConfig)


@pytest.mark.parametrize("with_file", [False, True])
def test_source_table_option_sets_the_step_flag(tmp_path, with_file):
    """``visitcal reprocess --source-table`` is the step config's write_source_table, laid over a --config file."""
    from visitcal.cli import _check_step_args, build_parser

    argv = ["reprocess", str(tmp_path)]
    if with_file:
        path = tmp_path / "c.json"
        path.write_text(json.dumps({"reprocess": {"do_use_sky_corr": True}}))
        argv += ["--config", str(path)]
    parser = build_parser()
    for extra, expect in (([], False), (["--source-table"], True)):
        args = parser.parse_args(argv + extra)
        _check_step_args(parser, args)
        config = args.config if args.config is not None else ReprocessStepConfig()
        assert config.write_source_table is expect
        assert config.reprocess.do_use_sky_corr is with_file
    assert ReprocessStepConfig().write_source_table is False
