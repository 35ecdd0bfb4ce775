"""aspp-seg: DeepLabv3 and Atrous Spatial Pyramid Pooling for street-scene segmentation."""

__version__ = "0.1.0"
