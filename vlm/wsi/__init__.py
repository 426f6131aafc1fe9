"""Whole-slide images: reading, tissue masks, patch grids, patch-feature extraction and the features file format."""

from .dataset import PatchDataset, make_patch_loader
from .extract import ExtractSummary, SlideResult, SlideSpec, extract_features, find_slides, read_slide_list
from .features import (
    FEATURES_FORMAT,
    FeaturesFileError,
    SlideFeatures,
    coords_to_grid,
    load_slide_features,
    save_slide_features,
)
from .formats import FEATURE_FORMATS, load_features, read_features_header, save_slide_features_h5
from .reader import READERS, MissingMPPError, SlideReader, SlideReadError, open_slide, register_reader
from .synthetic import write_synthetic_slide
from .tiling import PatchGrid, load_patch_grid, make_patch_grid, render_patch_grid, resolve_target_mpp, save_patch_grid
from .tissue import TissueMask, compute_tissue_mask, otsu_threshold, tissue_mask_from_rgb

__all__ = [
    "FEATURES_FORMAT",
    "FEATURE_FORMATS",
    "READERS",
    "ExtractSummary",
    "FeaturesFileError",
    "MissingMPPError",
    "PatchDataset",
    "PatchGrid",
    "SlideFeatures",
    "SlideReadError",
    "SlideReader",
    "SlideResult",
    "SlideSpec",
    "TissueMask",
    "compute_tissue_mask",
    "coords_to_grid",
    "extract_features",
    "find_slides",
    "load_features",
    "load_patch_grid",
    "load_slide_features",
    "make_patch_grid",
    "make_patch_loader",
    "open_slide",
    "otsu_threshold",
    "read_features_header",
    "read_slide_list",
    "register_reader",
    "render_patch_grid",
    "resolve_target_mpp",
    "save_patch_grid",
    "save_slide_features",
    "save_slide_features_h5",
    "tissue_mask_from_rgb",
    "write_synthetic_slide",
]
