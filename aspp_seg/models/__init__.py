"""Plain PyTorch models (no Lightning imports here)."""

from aspp_seg.models.aspp import ASPP, ASPPFactory
from aspp_seg.models.backbone import TimmBackbone
from aspp_seg.models.deeplab import DeepLabV3, check_eval_output_stride, set_output_stride
from aspp_seg.models.factory import MODELS, deeplabv3, deeplabv3plus, segnet
from aspp_seg.models.heads import DeepLabHead, DeepLabV3PlusHead, FCNHead
from aspp_seg.models.port import load_torchvision_deeplabv3, torchvision_deeplabv3
from aspp_seg.models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from aspp_seg.models.segnet import SegNet

__all__ = [
    "ASPP",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "ASPPFactory",
    "DeepLabHead",
    "DeepLabV3",
    "DeepLabV3PlusHead",
    "FCNHead",
    "SegNet",
    "TimmBackbone",
    "check_eval_output_stride",
    "deeplabv3",
    "deeplabv3plus",
    "load_torchvision_deeplabv3",
    "segnet",
    "set_output_stride",
    "torchvision_deeplabv3",
]
