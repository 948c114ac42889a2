"""The vision track: convolution, CNNs and ResNets, the ViT, preprocessing, image encoders.

Every image encoder returns a ``(B, N, D)`` grid and a ``(B, D)`` pooled vector.
"""

from .conv import conv1d, conv2d_loops, conv2d_unfold, convolve, cross_correlate
from .encoders import ENCODER_NAMES, CNNEncoder, CNNEncoderConfig, ImageEncoder, build_image_encoder
from .receptive_field import receptive_field
from .resnet import ConvStack, ConvStackConfig, ResNet, ResNetConfig, resnet18, resnet50
from .roi import object_crops, roi_features
from .small_cnn import SmallCNN, SmallCNNConfig, confusion_matrix, predict
from .transforms import compute_mean_std, eval_transforms, to_rgb, train_transforms
from .vit import ViT, ViTConfig

__all__ = [
    "conv1d", "conv2d_loops", "conv2d_unfold", "convolve", "cross_correlate", "ENCODER_NAMES",
    "CNNEncoder", "CNNEncoderConfig", "ImageEncoder", "build_image_encoder", "receptive_field",
    "ConvStack", "ConvStackConfig", "ResNet", "ResNetConfig", "resnet18", "resnet50", "object_crops", "roi_features", "SmallCNN",
    "SmallCNNConfig", "confusion_matrix", "predict", "compute_mean_std", "eval_transforms",
    "to_rgb", "train_transforms", "ViT", "ViTConfig",
]
