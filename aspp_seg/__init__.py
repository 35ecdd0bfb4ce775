"""aspp-seg: DeepLabv3 and Atrous Spatial Pyramid Pooling for street-scene segmentation.

``aspp_seg.load_model(run)`` loads a trained model (see `aspp_seg.loading`); it is
imported on first use, so ``import aspp_seg`` stays cheap.

The package is layered (imports run one way): `aspp_seg.cli` -> `aspp_seg.training`
(Lightning) -> `aspp_seg.evaluation` -> `aspp_seg.data` -> `aspp_seg.models`.
"""

__version__ = "0.2.0"

__all__ = ["load_model"]


def __getattr__(name: str):
    if name == "load_model":
        from aspp_seg.loading import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
