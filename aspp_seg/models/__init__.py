"""Plain PyTorch models (no Lightning imports here)."""

from aspp_seg.models.aspp import ASPP
from aspp_seg.models.backbone import TimmBackbone
from aspp_seg.models.deeplab import DeepLabV3
from aspp_seg.models.factory import MODELS, deeplabv3
from aspp_seg.models.heads import DeepLabHead

__all__ = ["ASPP", "MODELS", "DeepLabHead", "DeepLabV3", "TimmBackbone", "deeplabv3"]
