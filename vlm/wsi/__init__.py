"""Whole-slide images: reading, tissue masks, patch grids, patch-feature extraction and the features file format."""

from .features import FEATURES_FORMAT, SlideFeatures, coords_to_grid, load_slide_features, save_slide_features

__all__ = ["FEATURES_FORMAT", "SlideFeatures", "coords_to_grid", "load_slide_features", "save_slide_features"]
